//! The CLI: arguments (`args`), one function per subcommand (`commands`), the
//! read-only answers that compute (`inspect`) and the text of the rest (`render`).

pub(crate) mod args;
pub(crate) mod commands;
pub(crate) mod inspect;
pub(crate) mod render;
pub(crate) mod top;
