//! Everything that touches the kernel's side of a table: the XDP object, the
//! devices, the pinned state and its locks, the link, and the maps.

pub mod bans;
mod btf;
pub mod device;
pub mod egress;
pub mod link;
pub mod maps;
pub mod object;
pub mod pieces;
pub mod pins;
