//! Where prefixes come from: the source syntax (`spec`), bounded reads of local
//! files (`input`), URLs through a validated cache (`fetch`), CIDR lists
//! (`cidr_list`) and region data in its formats (`region`).

pub mod cidr_list;
pub mod fetch;
pub mod input;
pub mod region;
pub mod spec;
