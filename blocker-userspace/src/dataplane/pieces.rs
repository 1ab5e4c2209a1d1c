//! The classifier maps' pieces (`blocker_common::classifier::Piece`): writing a
//! table into a new program instance's maps, and reading a loaded table back
//! piece by piece.
//!
//! Each classifier map is an array of maps; each inner map is a one-element
//! array holding one piece of just under 32 KiB, which the kernel allocates with
//! kmalloc in its direct map (huge pages) rather than vmalloc (4 KiB pages). A
//! piece is written with one update before any program uses it, so a table is
//! still whole before the swap and the swap stays atomic.

use std::cell::OnceCell;

use aya::maps::{Array, ArrayOfMaps, Map, MapData, MapError};
use blocker_common::classifier::{Block64, Piece, PIECE_BLOCKS, PIECE_BYTES};

use super::maps::{map_memory, MapsError};

type Result<T, E = MapsError> = std::result::Result<T, E>;

/// One piece as an inner map.
type PieceArray = Array<MapData, Piece>;

fn map_error(what: String) -> impl FnOnce(MapError) -> MapsError {
    move |error| MapsError::Map { what, error: Box::new(error) }
}

/// Writes `content` (whole blocks) into the classifier map `outer` (`name`), whose
/// size the loader set to `blocker_common::classifier::pieces` of it: one new
/// inner map per piece, filled, then put in its slot.
pub fn fill(outer: &mut Map, name: &str, content: &[u8]) -> Result<()> {
    let mut outer: ArrayOfMaps<&mut MapData, PieceArray> =
        ArrayOfMaps::try_from(outer).map_err(map_error(format!("classifier map {name}")))?;
    let mut piece = Box::new(Piece { blocks: [[0; 8]; PIECE_BLOCKS as usize] });
    let chunks: Vec<&[u8]> = if content.is_empty() { vec![&[]] } else { content.chunks(PIECE_BYTES).collect() };
    for (index, chunk) in chunks.into_iter().enumerate() {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(piece.blocks.as_mut_slice());
        bytes[..chunk.len()].copy_from_slice(chunk);
        bytes[chunk.len()..].fill(0);
        let what = || format!("piece {index} of classifier map {name}");
        let mut inner = PieceArray::create(1, 0).map_err(map_error(what()))?;
        inner.set(0, piece.as_ref(), 0).map_err(map_error(what()))?;
        outer.set(index as u32, &inner, 0).map_err(map_error(what()))?;
    }
    Ok(())
}

/// A classifier map of a loaded table, read a piece at a time as lookups need
/// them: a lookup in the live table reads a piece or two, not the table.
pub struct PieceMap {
    outer: Map,
    pieces: Vec<OnceCell<Option<Box<Piece>>>>,
}

impl PieceMap {
    pub fn open(map: MapData, name: &str) -> Result<Self> {
        let count = map.info().map_err(map_error(format!("classifier map {name}")))?.max_entries();
        let outer = Map::ArrayOfMaps(map);
        ArrayOfMaps::<&MapData, MapData>::try_from(&outer)
            .map_err(map_error(format!("classifier map {name} is not an array of maps: another version's")))?;
        Ok(PieceMap { outer, pieces: (0..count).map(|_| OnceCell::new()).collect() })
    }

    /// Block `block` as a block of `B` (None: past the map, or unreadable).
    pub fn block<B: bytemuck::Pod>(&self, block: u32) -> Option<&B> {
        let index = block / PIECE_BLOCKS;
        let piece = self.pieces.get(index as usize)?.get_or_init(|| self.read(index)).as_ref()?;
        let b: &Block64 = &piece.blocks[(block % PIECE_BLOCKS) as usize];
        bytemuck::try_cast_ref(b).ok()
    }

    /// Piece `index`'s inner map.
    fn inner(&self, index: u32) -> Option<MapData> {
        ArrayOfMaps::<&MapData, MapData>::try_from(&self.outer).ok()?.get(&index, 0).ok()
    }

    fn read(&self, index: u32) -> Option<Box<Piece>> {
        let inner = PieceArray::try_from(Map::Array(self.inner(index)?)).ok()?;
        Some(Box::new(inner.get(&0, 0).ok()?))
    }

    /// Kernel memory of the map: the outer array and its pieces (all of one size,
    /// so one piece's figure times their number).
    pub fn memory(&self) -> Result<u64> {
        let Map::ArrayOfMaps(outer) = &self.outer else { return Ok(0) };
        let piece = match self.inner(0) {
            Some(inner) => map_memory(&inner)?,
            None => 0,
        };
        Ok(map_memory(outer)? + piece * self.pieces.len() as u64)
    }
}
