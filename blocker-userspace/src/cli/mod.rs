//! The CLI: arguments (`args`), one function per subcommand (`commands`), the
//! read-only answers that compute (`inspect`) and the text of the rest (`render`).

pub mod args;
pub mod commands;
pub mod inspect;
pub mod render;
