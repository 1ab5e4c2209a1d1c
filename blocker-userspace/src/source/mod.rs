//! Where prefixes come from: the source syntax (`spec`), bounded reads of local
//! files (`input`), URLs through a validated cache (`fetch`), CIDR lists
//! (`cidr_list`), region data in its formats (`region`) and networks by owner
//! (`asn`).

pub mod asn;
pub mod cidr_list;
pub mod fetch;
pub mod input;
pub mod region;
pub mod spec;
