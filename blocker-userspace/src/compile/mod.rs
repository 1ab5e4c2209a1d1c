//! From list specs to what the kernel reads: the disjoint table of ranges
//! (`table`), then the classifier image built from it (`classifier`).

pub mod classifier;
pub mod table;
