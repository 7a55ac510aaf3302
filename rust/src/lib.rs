//! Native kernels for Nexa's data path, exposed to Python as `nexa_kernels._nexa_kernels`.
//!
//! Every entry point reads Arrow arrays and numpy arrays in place through the buffer
//! protocol, writes into output arrays the caller allocates, and runs with the GIL
//! released on rayon's thread pool.

pub mod buffers;
pub mod dedup;
pub mod minhash;
pub mod normalize;
pub mod packing;
pub mod patterns;
pub mod stats;
pub mod text;
pub mod unicode;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use buffers::{ArrowText, RawBuffer};
use dedup::Signatures;

fn expect_len(got: usize, want: usize, what: &str) -> PyResult<()> {
    if got != want {
        return Err(PyValueError::new_err(format!(
            "{what} holds {got} items, expected {want}"
        )));
    }
    Ok(())
}

fn permutations(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<minhash::Permutations> {
    let (a_buf, b_buf) = (
        RawBuffer::get(a, false, "a")?,
        RawBuffer::get(b, false, "b")?,
    );
    minhash::Permutations::new(a_buf.slice("a")?, b_buf.slice("b")?).map_err(PyValueError::new_err)
}

/// A writable signature matrix of `rows * num_perm` uint64 or uint32 (low 32 bits) entries.
enum SigOut<'a> {
    U64(&'a mut [u64]),
    U32(&'a mut [u32]),
}

fn signature_output<'a>(buf: &'a mut RawBuffer, entries: usize) -> PyResult<SigOut<'a>> {
    let bytes = buf.slice::<u8>("out")?.len();
    if bytes == entries * 8 && entries > 0 {
        Ok(SigOut::U64(buf.slice_mut::<u64>("out")?))
    } else if bytes == entries * 4 {
        Ok(SigOut::U32(buf.slice_mut::<u32>("out")?))
    } else {
        Err(PyValueError::new_err(format!(
            "out holds {bytes} bytes, expected {entries} uint64 or uint32 entries"
        )))
    }
}

/// MinHash signatures of word n-gram shingles for every row of a pyarrow string array.
#[pyfunction]
#[pyo3(signature = (texts, ngram, a, b, out, word_counts))]
fn minhash_signatures(
    py: Python<'_>,
    texts: &Bound<'_, PyAny>,
    ngram: usize,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    word_counts: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if ngram == 0 {
        return Err(PyValueError::new_err("ngram must be at least 1"));
    }
    let arrow = ArrowText::from_array(texts)?;
    let perms = permutations(a, b)?;
    let (mut out_buf, mut count_buf) = (
        RawBuffer::get(out, true, "out")?,
        RawBuffer::get(word_counts, true, "word_counts")?,
    );
    let column = arrow.column()?;
    let sig = signature_output(&mut out_buf, arrow.len() * perms.len())?;
    let counts = count_buf.slice_mut::<i64>("word_counts")?;
    expect_len(counts.len(), arrow.len(), "word_counts")?;
    py.allow_threads(|| match sig {
        SigOut::U64(s) => minhash::signatures(&column, ngram, &perms, s, counts),
        SigOut::U32(s) => minhash::signatures(&column, ngram, &perms, s, counts),
    });
    Ok(())
}

/// Normalize every ASCII row as the audit does, then hash it and compute its signature.
#[pyfunction]
#[pyo3(signature = (texts, ngram, a, b, signatures, hashes, word_counts, handled))]
#[allow(clippy::too_many_arguments)]
fn ascii_fingerprints(
    py: Python<'_>,
    texts: &Bound<'_, PyAny>,
    ngram: usize,
    a: &Bound<'_, PyAny>,
    b: &Bound<'_, PyAny>,
    signatures: &Bound<'_, PyAny>,
    hashes: &Bound<'_, PyAny>,
    word_counts: &Bound<'_, PyAny>,
    handled: &Bound<'_, PyAny>,
) -> PyResult<()> {
    if ngram == 0 {
        return Err(PyValueError::new_err("ngram must be at least 1"));
    }
    let arrow = ArrowText::from_array(texts)?;
    let n = arrow.len();
    let perms = permutations(a, b)?;
    let mut bufs = [
        RawBuffer::get(signatures, true, "signatures")?,
        RawBuffer::get(hashes, true, "hashes")?,
        RawBuffer::get(word_counts, true, "word_counts")?,
        RawBuffer::get(handled, true, "handled")?,
    ];
    let column = arrow.column()?;
    let [sig_buf, hash_buf, count_buf, ok_buf] = &mut bufs;
    let sig = signature_output(sig_buf, n * perms.len())?;
    let hash_out = hash_buf.slice_mut::<u64>("hashes")?;
    expect_len(hash_out.len(), n * 2, "hashes")?;
    let counts = count_buf.slice_mut::<i64>("word_counts")?;
    expect_len(counts.len(), n, "word_counts")?;
    let ok = ok_buf.slice_mut::<bool>("handled")?;
    expect_len(ok.len(), n, "handled")?;
    py.allow_threads(|| match sig {
        SigOut::U64(s) => minhash::ascii_fingerprints(
            &column,
            ngram,
            &perms,
            minhash::Fingerprints {
                signatures: s,
                hashes: hash_out,
                word_counts: counts,
                handled: ok,
            },
        ),
        SigOut::U32(s) => minhash::ascii_fingerprints(
            &column,
            ngram,
            &perms,
            minhash::Fingerprints {
                signatures: s,
                hashes: hash_out,
                word_counts: counts,
                handled: ok,
            },
        ),
    });
    Ok(())
}

/// Regular expressions compiled once (ASCII classes and word boundaries, as in RE2).
#[pyclass(frozen, module = "nexa_kernels._nexa_kernels")]
struct PatternSet {
    set: regex::bytes::RegexSet,
}

#[pymethods]
impl PatternSet {
    #[new]
    fn new(patterns: Vec<String>) -> PyResult<Self> {
        let set = patterns::compile(&patterns).map_err(PyValueError::new_err)?;
        Ok(PatternSet { set })
    }

    /// Number of patterns.
    fn __len__(&self) -> usize {
        self.set.len()
    }

    /// Which patterns match each row, into a bool (rows, patterns) array.
    fn matches(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        out: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let arrow = ArrowText::from_array(texts)?;
        let mut out_buf = RawBuffer::get(out, true, "out")?;
        let column = arrow.column()?;
        let found = out_buf.slice_mut::<bool>("out")?;
        expect_len(found.len(), arrow.len() * self.set.len(), "out")?;
        py.allow_threads(|| patterns::matches(&column, &self.set, found));
        Ok(())
    }
}

/// The 128-bit xxh3 hash of every row's bytes, as (high, low) uint64 pairs.
#[pyfunction]
#[pyo3(signature = (texts, out))]
fn text_hashes(py: Python<'_>, texts: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
    let arrow = ArrowText::from_array(texts)?;
    let mut out_buf = RawBuffer::get(out, true, "out")?;
    let column = arrow.column()?;
    let hashes = out_buf.slice_mut::<u64>("out")?;
    expect_len(hashes.len(), arrow.len() * 2, "out")?;
    py.allow_threads(|| dedup::text_hashes(&column, hashes));
    Ok(())
}

/// Cluster rows by LSH over their signatures; writes labels, returns the verified pair count.
#[pyfunction]
#[pyo3(signature = (signatures, num_perm, valid, threshold, bands, rows_per_band, labels))]
#[allow(clippy::too_many_arguments)]
fn near_duplicate_clusters(
    py: Python<'_>,
    signatures: &Bound<'_, PyAny>,
    num_perm: usize,
    valid: &Bound<'_, PyAny>,
    threshold: f64,
    bands: usize,
    rows_per_band: usize,
    labels: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    if num_perm == 0 || bands == 0 || rows_per_band == 0 || bands * rows_per_band > num_perm {
        return Err(PyValueError::new_err(format!(
            "need bands * rows_per_band <= num_perm, all positive; got {bands} x {rows_per_band} for {num_perm}"
        )));
    }
    let valid_buf = RawBuffer::get(valid, false, "valid")?;
    let valid: &[bool] = valid_buf.slice("valid")?;
    let n = valid.len();
    if n >= u32::MAX as usize {
        return Err(PyValueError::new_err(
            "at most 2**32-1 rows can be clustered at once",
        ));
    }
    let sig_buf = RawBuffer::get(signatures, false, "signatures")?;
    let raw: &[u8] = sig_buf.slice("signatures")?;
    let sig = match raw.len().checked_div(n * num_perm) {
        None => Signatures::U64(&[], num_perm),
        Some(2) => Signatures::U16(sig_buf.slice("signatures")?, num_perm),
        Some(4) => Signatures::U32(sig_buf.slice("signatures")?, num_perm),
        Some(8) => Signatures::U64(sig_buf.slice("signatures")?, num_perm),
        Some(_) => {
            return Err(PyValueError::new_err(format!(
            "signatures must be a ({n}, {num_perm}) uint16, uint32 or uint64 array, got {} bytes",
            raw.len()
        )))
        }
    };
    if n > 0 && !raw.len().is_multiple_of(n * num_perm) {
        return Err(PyValueError::new_err(
            "signatures do not match (rows, num_perm)",
        ));
    }
    let mut label_buf = RawBuffer::get(labels, true, "labels")?;
    let out = label_buf.slice_mut::<i64>("labels")?;
    expect_len(out.len(), n, "labels")?;
    if n == 0 {
        return Ok(0);
    }
    let (found, pairs) = py.allow_threads(|| {
        dedup::near_duplicate_clusters(&sig, valid, threshold, bands, rows_per_band)
    });
    out.copy_from_slice(&found);
    Ok(pairs)
}

/// Per-row text statistics (columns named by `TEXT_STAT_FIELDS`) into an int64 (rows, fields) array.
#[pyfunction]
#[pyo3(signature = (texts, out))]
fn text_stats(py: Python<'_>, texts: &Bound<'_, PyAny>, out: &Bound<'_, PyAny>) -> PyResult<()> {
    let arrow = ArrowText::from_array(texts)?;
    let mut out_buf = RawBuffer::get(out, true, "out")?;
    let column = arrow.column()?;
    let stats_out = out_buf.slice_mut::<i64>("out")?;
    expect_len(stats_out.len(), arrow.len() * stats::FIELDS.len(), "out")?;
    py.allow_threads(|| stats::text_stats(&column, stats_out));
    Ok(())
}

/// First-fit-decreasing packing of int64 lengths into bins of `capacity`; returns the bin count.
#[pyfunction]
#[pyo3(signature = (lengths, capacity, bins, offsets))]
fn pack_first_fit_decreasing(
    py: Python<'_>,
    lengths: &Bound<'_, PyAny>,
    capacity: i64,
    bins: &Bound<'_, PyAny>,
    offsets: &Bound<'_, PyAny>,
) -> PyResult<usize> {
    let len_buf = RawBuffer::get(lengths, false, "lengths")?;
    let lengths: &[i64] = len_buf.slice("lengths")?;
    let (mut bin_buf, mut off_buf) = (
        RawBuffer::get(bins, true, "bins")?,
        RawBuffer::get(offsets, true, "offsets")?,
    );
    let bins = bin_buf.slice_mut::<i64>("bins")?;
    let offsets = off_buf.slice_mut::<i64>("offsets")?;
    expect_len(bins.len(), lengths.len(), "bins")?;
    expect_len(offsets.len(), lengths.len(), "offsets")?;
    py.allow_threads(|| packing::first_fit_decreasing(lengths, capacity, bins, offsets))
        .map_err(PyValueError::new_err)
}

/// Position ids of packed sequences into an int32 (bins, capacity) array, `pad` where no token is.
#[pyfunction]
#[pyo3(signature = (lengths, bins, offsets, capacity, pad, out))]
fn position_ids(
    py: Python<'_>,
    lengths: &Bound<'_, PyAny>,
    bins: &Bound<'_, PyAny>,
    offsets: &Bound<'_, PyAny>,
    capacity: usize,
    pad: i32,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let bufs = [
        RawBuffer::get(lengths, false, "lengths")?,
        RawBuffer::get(bins, false, "bins")?,
        RawBuffer::get(offsets, false, "offsets")?,
    ];
    let (lengths, bins, offsets) = (
        bufs[0].slice("lengths")?,
        bufs[1].slice("bins")?,
        bufs[2].slice("offsets")?,
    );
    expect_len(bins.len(), lengths.len(), "bins")?;
    expect_len(offsets.len(), lengths.len(), "offsets")?;
    if capacity == 0 {
        return Err(PyValueError::new_err("capacity must be positive"));
    }
    let mut out_buf = RawBuffer::get(out, true, "out")?;
    let ids = out_buf.slice_mut::<i32>("out")?;
    if ids.len() % capacity != 0 {
        return Err(PyValueError::new_err(format!(
            "out holds {} items, not a multiple of {capacity}",
            ids.len()
        )));
    }
    py.allow_threads(|| packing::position_ids(lengths, bins, offsets, capacity, pad, ids))
        .map_err(PyValueError::new_err)
}

/// Number of threads the kernels run on.
#[pyfunction]
fn num_threads() -> usize {
    rayon::current_num_threads()
}

#[pymodule]
fn _nexa_kernels(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add(
        "TEXT_STAT_FIELDS",
        pyo3::types::PyTuple::new(m.py(), stats::FIELDS)?,
    )?;
    m.add("EMPTY_SIGNATURE", minhash::EMPTY)?;
    m.add_function(wrap_pyfunction!(minhash_signatures, m)?)?;
    m.add_function(wrap_pyfunction!(ascii_fingerprints, m)?)?;
    m.add_class::<PatternSet>()?;
    m.add_function(wrap_pyfunction!(text_hashes, m)?)?;
    m.add_function(wrap_pyfunction!(near_duplicate_clusters, m)?)?;
    m.add_function(wrap_pyfunction!(text_stats, m)?)?;
    m.add_function(wrap_pyfunction!(pack_first_fit_decreasing, m)?)?;
    m.add_function(wrap_pyfunction!(position_ids, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    Ok(())
}
