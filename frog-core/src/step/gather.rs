//! [`gather_rows`]: the sampled rows of a full batch, gathered on the
//! backend from a buffer or a view of the caller's storage.

use core::fmt;

use super::mul;
use crate::backend::{whole, Backend};
use crate::error::{Error, ShapeError};

/// Gathers the sampled rows of a full batch on the backend: row `k` of
/// `dst` becomes row `rows[k]` of `src` (rows of `row_len` entries, such as
/// a layer's [`Layer::input_len`](crate::Layer::input_len) or [`Layer::output_len`](crate::Layer::output_len)). One sample
/// serves every layer of a FROG step: gather each layer's input and output
/// gradient with the same [`crate::Optimizer::sample`].
///
/// `src` is a buffer (`&B::Buffer`) or a view of the caller's storage such
/// as a framework's activation tensor ([`ViewSource`]).
///
/// Rejects, before copying anything, an index past the rows of `src`, a
/// `dst` shorter than the rows gathered, and sizes that overflow `usize`.
pub fn gather_rows<B: Backend>(backend: &B, rows: &[usize], row_len: usize, src: impl GatherSource<B>, dst: &mut B::Buffer) -> Result<(), Error<B::Error>> {
    check_gather(backend, rows, row_len, src.len(backend), dst)?;
    src.copy_rows(backend, rows, row_len, dst).map_err(Error::Backend)
}

/// What [`gather_rows`] takes rows from: a buffer (`&B::Buffer`) or a
/// [`ViewSource`]. Sealed.
pub trait GatherSource<B: Backend>: sealed_gather::GatherSource<B> {}

impl<B: Backend> GatherSource<B> for &B::Buffer {}
impl<B: Backend> GatherSource<B> for ViewSource<'_, B> {}

/// A view of a full batch to gather rows from (see [`gather_rows`]): a
/// wrapper, as a view type and a buffer type of the same backend cannot be
/// told apart by the trait system.
pub struct ViewSource<'a, B: Backend + 'a>(pub B::View<'a>);

impl<'a, B: Backend + 'a> fmt::Debug for ViewSource<'a, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ViewSource").finish_non_exhaustive()
    }
}

/// The calls behind [`GatherSource`] (see [`crate::step::sealed`]).
pub(crate) mod sealed_gather {
    use super::*;

    /// A gather's source.
    pub trait GatherSource<B: Backend> {
        /// Entries of the source.
        fn len(&self, backend: &B) -> usize;
        /// The copy, once the indices are checked.
        fn copy_rows(&self, backend: &B, rows: &[usize], row_len: usize, dst: &mut B::Buffer) -> Result<(), B::Error>;
    }

    impl<B: Backend> GatherSource<B> for &B::Buffer {
        fn len(&self, backend: &B) -> usize {
            backend.len(self)
        }
        fn copy_rows(&self, backend: &B, rows: &[usize], row_len: usize, dst: &mut B::Buffer) -> Result<(), B::Error> {
            ViewSource::<B>(whole(backend, self)?).copy_rows(backend, rows, row_len, dst)
        }
    }

    impl<B: Backend> GatherSource<B> for ViewSource<'_, B> {
        fn len(&self, backend: &B) -> usize {
            backend.view_len(&self.0)
        }
        fn copy_rows(&self, backend: &B, rows: &[usize], row_len: usize, dst: &mut B::Buffer) -> Result<(), B::Error> {
            backend.copy_rows(rows, row_len, &self.0, dst)
        }
    }
}

/// A gather's checks: every index within the `src_len / row_len` rows of
/// its source, and room in `dst` for the rows gathered.
fn check_gather<B: Backend>(backend: &B, rows: &[usize], row_len: usize, src_len: usize, dst: &B::Buffer) -> Result<(), ShapeError> {
    let src_rows = src_len / row_len.max(1);
    if let Some(&index) = rows.iter().find(|&&i| i >= src_rows) {
        return Err(ShapeError::IndexOutOfRange { what: "gathered row", index, len: src_rows });
    }
    let needed = mul(rows.len(), row_len, "gathered entries (rows * row length)")?;
    if backend.len(dst) < needed {
        return Err(ShapeError::BufferLength { what: "gather destination", expected: needed, actual: backend.len(dst) });
    }
    Ok(())
}
