//! MinHash signatures over word n-gram shingles, bit for bit the audit's numpy algorithm.
//!
//! word hash = xxh3-64(word bytes); an n-gram folds its word hashes with
//! `acc = acc * NGRAM_MULT + h` (short rows: one shingle of all their words) and is
//! finished by splitmix64. Permutation j maps the top 32 bits `x` of a shingle to
//! `(a_j * x + b_j) mod (2^61 - 1)` with `a_j < 2^32`; a signature entry is the minimum
//! over the row's shingles, `u64::MAX` for a row without words.

use rayon::prelude::*;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64};

use crate::normalize::{is_ascii_space, normalize_ascii};
use crate::text::{words, TextColumn};

pub const MERSENNE_61: u64 = (1 << 61) - 1;
pub const EMPTY: u64 = u64::MAX;
const NGRAM_MULT: u64 = 0x9E37_79B9_7F4A_7C15;
/// Permutations folded together, their coefficients and minima held in registers.
const LANES: usize = 16;
/// Rows handed to one rayon task: enough work to amortize scheduling.
const ROWS_PER_TASK: usize = 256;

/// splitmix64's finalizer.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shingle hashes of one row's word hashes (appended to `out`).
pub fn shingles_into(word_hashes: &[u64], ngram: usize, out: &mut Vec<u64>) {
    let count = word_hashes.len();
    if count == 0 {
        return;
    }
    let fold = |start: usize| {
        let mut acc = 0u64;
        for k in 0..ngram {
            let w = word_hashes.get(start + k).copied().unwrap_or(0);
            acc = acc.wrapping_mul(NGRAM_MULT).wrapping_add(w);
        }
        mix64(acc)
    };
    if count < ngram {
        out.push(fold(0));
    } else {
        out.extend((0..=count - ngram).map(fold));
    }
}

/// Word hashes of one text (appended to `out`); returns the number of words.
#[inline]
pub fn word_hashes_into(text: &str, out: &mut Vec<u64>) -> usize {
    if text.is_ascii() {
        return ascii_word_hashes_into(text.as_bytes(), out);
    }
    let before = out.len();
    out.extend(words(text).map(|w| xxh3_64(w.as_bytes())));
    out.len() - before
}

/// `word_hashes_into` for text known to be ASCII: for ASCII the whitespace set is a
/// table lookup, so the split is byte-wise with no decoding.
#[inline]
pub fn ascii_word_hashes_into(bytes: &[u8], out: &mut Vec<u64>) -> usize {
    let before = out.len();
    out.extend(
        bytes
            .split(|&b| is_ascii_space(b))
            .filter(|w| !w.is_empty())
            .map(xxh3_64),
    );
    out.len() - before
}

/// Word hashes of one row's bytes, read as UTF-8 with U+FFFD for invalid sequences;
/// an ASCII row (the common case) is checked once and never decoded.
#[inline]
pub fn row_word_hashes_into(bytes: &[u8], out: &mut Vec<u64>) -> usize {
    if bytes.is_ascii() {
        ascii_word_hashes_into(bytes, out)
    } else {
        word_hashes_into(&String::from_utf8_lossy(bytes), out)
    }
}

/// `(a * x + b) mod 2^61-1` for `a`, `x` below 2^32, exactly as the numpy path reduces it.
#[inline(always)]
pub fn permute(x: u64, a: u64, b: u64) -> u64 {
    let mut v = x * a;
    v = (v & MERSENNE_61) + (v >> 61);
    v += b;
    v = (v & MERSENNE_61) + (v >> 61);
    if v >= MERSENNE_61 {
        v - MERSENNE_61
    } else {
        v
    }
}

/// A signature entry the kernels write: the full value, or its low 32 bits (all that
/// equality tests need, at half the memory).
pub trait Entry: Copy + Send + Sync {
    fn from_u64(v: u64) -> Self;
}

impl Entry for u64 {
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v
    }
}

impl Entry for u32 {
    #[inline(always)]
    fn from_u64(v: u64) -> Self {
        v as u32
    }
}

/// Permutation coefficients laid out for the vectorized inner loop.
pub struct Permutations {
    a: Vec<u32>,
    b: Vec<u64>,
}

impl Permutations {
    /// Checks the ranges the exact reduction relies on.
    pub fn new(a: &[u64], b: &[u64]) -> Result<Self, String> {
        if a.len() != b.len() || a.is_empty() {
            return Err(format!(
                "a and b must be equally long and non-empty, got {} and {}",
                a.len(),
                b.len()
            ));
        }
        if let Some(bad) = a.iter().find(|&&v| v == 0 || v >= 1 << 32) {
            return Err(format!("every a must be in [1, 2**32), got {bad}"));
        }
        if let Some(bad) = b.iter().find(|&&v| v >= MERSENNE_61) {
            return Err(format!("every b must be below 2**61-1, got {bad}"));
        }
        Ok(Permutations {
            a: a.iter().map(|&v| v as u32).collect(),
            b: b.to_vec(),
        })
    }

    pub fn len(&self) -> usize {
        self.a.len()
    }

    pub fn is_empty(&self) -> bool {
        self.a.is_empty()
    }

    /// Folds `shingles` into the running minima `mins`.
    ///
    /// Permutations go in blocks of `LANES` whose coefficients and minima stay in
    /// registers while every shingle streams past. With `u = (a*x mod 2^61-1)` folded
    /// once (`u <= P + 7`), `t = u + b` is below `K * P`, so `t mod P` is the least of
    /// `t - k*P` for `k < K` taken as wrapping unsigned values (a negative one wraps
    /// above every candidate). The minimum over shingles of that least value is the
    /// least of K running minima, one per offset: an add and an unsigned min each,
    /// instead of a second fold, compare and subtract per shingle. K = 2 suffices
    /// unless a block holds a `b` within 7 of P (which a random `b` all but never is).
    #[inline(always)]
    fn fold_generic(&self, shingles: &[u64], mins: &mut [u64]) {
        let p = mins.len();
        let mut start = 0;
        while start + LANES <= p {
            let block = start..start + LANES;
            if self.b[block.clone()].iter().all(|&b| b < MERSENNE_61 - 7) {
                self.fold_block::<2>(start, shingles, &mut mins[block]);
            } else {
                self.fold_block::<3>(start, shingles, &mut mins[block]);
            }
            start += LANES;
        }
        let tail = self.a[start..p].iter().zip(&self.b[start..p]);
        for (slot, (&a, &b)) in mins[start..].iter_mut().zip(tail) {
            let a = a as u64;
            *slot = shingles
                .iter()
                .map(|&s| permute(s >> 32, a, b))
                .min()
                .unwrap_or(u64::MAX);
        }
    }

    /// `fold_generic` for the `LANES` permutations from `start`, with `K` offsets.
    #[inline(always)]
    fn fold_block<const K: usize>(&self, start: usize, shingles: &[u64], mins: &mut [u64]) {
        let mut a = [0u32; LANES];
        let mut b = [[0u64; LANES]; K];
        let mut m = [[u64::MAX; LANES]; K];
        for j in 0..LANES {
            a[j] = self.a[start + j];
            for (k, bk) in b.iter_mut().enumerate() {
                bk[j] = self.b[start + j].wrapping_sub(k as u64 * MERSENNE_61);
            }
        }
        for &s in shingles {
            // Both factors are 32-bit (one `vpmuludq` per lane group).
            let x = (s >> 32) as u32 as u64;
            for j in 0..LANES {
                let v = x * a[j] as u64;
                let u = (v & MERSENNE_61) + (v >> 61);
                for k in 0..K {
                    m[k][j] = m[k][j].min(u.wrapping_add(b[k][j]));
                }
            }
        }
        for (j, slot) in mins.iter_mut().enumerate() {
            *slot = (0..K).map(|k| m[k][j]).min().unwrap_or(u64::MAX);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fold_avx2(&self, shingles: &[u64], mins: &mut [u64]) {
        self.fold_generic(shingles, mins)
    }

    /// AVX-512 has a 64-bit unsigned lane minimum (`vpminuq`) and twice the lanes.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn fold_avx512(&self, shingles: &[u64], mins: &mut [u64]) {
        self.fold_generic(shingles, mins)
    }

    /// The signature of one row from its shingles, written to `out`.
    pub fn signature<E: Entry>(&self, shingles: &[u64], mins: &mut Vec<u64>, out: &mut [E]) {
        if shingles.is_empty() {
            out.fill(E::from_u64(EMPTY));
            return;
        }
        mins.clear();
        mins.resize(self.len(), u64::MAX);
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F, checked just above.
                unsafe { self.fold_avx512(shingles, mins) };
            } else if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2, checked just above.
                unsafe { self.fold_avx2(shingles, mins) };
            } else {
                self.fold_generic(shingles, mins);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        self.fold_generic(shingles, mins);
        for (o, &m) in out.iter_mut().zip(mins.iter()) {
            *o = E::from_u64(m);
        }
    }
}

/// Signatures of every row of `texts` into `out` (rows x permutations, row-major) and the
/// word count of each row into `word_counts`, in parallel.
pub fn signatures<E: Entry>(
    texts: &TextColumn<'_>,
    ngram: usize,
    perms: &Permutations,
    out: &mut [E],
    word_counts: &mut [i64],
) {
    let p = perms.len();
    assert_eq!(out.len(), texts.len() * p);
    assert_eq!(word_counts.len(), texts.len());
    out.par_chunks_mut(ROWS_PER_TASK * p)
        .zip(word_counts.par_chunks_mut(ROWS_PER_TASK))
        .enumerate()
        .for_each(|(task, (sig_chunk, count_chunk))| {
            let mut hashes = Vec::new();
            let mut shingles = Vec::new();
            let mut mins = Vec::new();
            let first = task * ROWS_PER_TASK;
            for (k, (sig, count)) in sig_chunk
                .chunks_mut(p)
                .zip(count_chunk.iter_mut())
                .enumerate()
            {
                hashes.clear();
                shingles.clear();
                *count = row_word_hashes_into(texts.bytes(first + k), &mut hashes) as i64;
                shingles_into(&hashes, ngram, &mut shingles);
                perms.signature(&shingles, &mut mins, sig);
            }
        });
}

/// Per-row outputs of `ascii_fingerprints`, each sliced to the same rows.
pub struct Fingerprints<'a, E> {
    /// rows x permutations signatures of the normalized text
    pub signatures: &'a mut [E],
    /// rows x 2: xxh3-128 of the normalized text as (high, low)
    pub hashes: &'a mut [u64],
    /// words of the normalized text
    pub word_counts: &'a mut [i64],
    /// whether the row was ASCII and so handled here (other rows are left untouched)
    pub handled: &'a mut [bool],
}

/// For every ASCII row: normalize it (`normalize::normalize_ascii`) into scratch space,
/// then hash it and compute its signature, as `text_hashes` and `signatures` would on
/// the normalized column. Rows that are not ASCII are only marked unhandled.
pub fn ascii_fingerprints<E: Entry>(
    texts: &TextColumn<'_>,
    ngram: usize,
    perms: &Permutations,
    out: Fingerprints<'_, E>,
) {
    let p = perms.len();
    let n = texts.len();
    assert_eq!(out.signatures.len(), n * p);
    assert_eq!(out.hashes.len(), n * 2);
    assert_eq!(out.word_counts.len(), n);
    assert_eq!(out.handled.len(), n);
    out.signatures
        .par_chunks_mut(ROWS_PER_TASK * p)
        .zip(out.hashes.par_chunks_mut(ROWS_PER_TASK * 2))
        .zip(
            out.word_counts
                .par_chunks_mut(ROWS_PER_TASK)
                .zip(out.handled.par_chunks_mut(ROWS_PER_TASK)),
        )
        .enumerate()
        .for_each(
            |(task, ((sig_chunk, hash_chunk), (count_chunk, ok_chunk)))| {
                let (mut text, mut hashes, mut shingles, mut mins) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let first = task * ROWS_PER_TASK;
                for (k, (ok, count)) in ok_chunk.iter_mut().zip(count_chunk.iter_mut()).enumerate()
                {
                    *ok = normalize_ascii(texts.bytes(first + k), &mut text);
                    if !*ok {
                        continue;
                    }
                    let h = xxh3_128(&text);
                    hash_chunk[2 * k] = (h >> 64) as u64;
                    hash_chunk[2 * k + 1] = h as u64;
                    hashes.clear();
                    shingles.clear();
                    *count = ascii_word_hashes_into(&text, &mut hashes) as i64;
                    shingles_into(&hashes, ngram, &mut shingles);
                    perms.signature(&shingles, &mut mins, &mut sig_chunk[k * p..(k + 1) * p]);
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::OwnedColumn;

    fn slow_permute(x: u64, a: u64, b: u64) -> u64 {
        ((a as u128 * x as u128 + b as u128) % MERSENNE_61 as u128) as u64
    }

    #[test]
    fn permute_is_exact_modular_arithmetic() {
        let cases = [
            (0u64, 1u64, 0u64),
            (u32::MAX as u64, u32::MAX as u64, MERSENNE_61 - 1),
            (12345, 678, 9),
        ];
        for (x, a, b) in cases {
            assert_eq!(permute(x, a, b), slow_permute(x, a, b));
        }
        let mut s = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            s = mix64(s);
            let (x, a, b) = (s >> 32, (s & 0xFFFF_FFFF).max(1), mix64(s) % MERSENNE_61);
            assert_eq!(permute(x, a, b), slow_permute(x, a, b));
        }
    }

    #[test]
    fn signatures_are_exact_minima_including_extreme_coefficients() {
        // 20 permutations: one block of 16 lanes plus a scalar tail. 2323823089 *
        // 3969050863 = 3 * 2^61 + P, so with b = P - 1 that shingle reaches 2P + 2, the
        // rarest offset; the other coefficients sit at the ends of their ranges.
        let mut s = 0x00dd_ba11_u64;
        let mut a = vec![2_323_823_089, u32::MAX as u64, 1, u32::MAX as u64 - 1];
        let mut b = vec![MERSENNE_61 - 1, MERSENNE_61 - 1, 0, MERSENNE_61 - 2];
        while a.len() < 20 {
            s = mix64(s);
            a.push((s >> 32).max(1));
            b.push(mix64(s) % MERSENNE_61);
        }
        let mut rows: Vec<Vec<u64>> = vec![
            vec![u64::MAX, u64::MAX - (1 << 32)],
            vec![0],
            vec![3_969_050_863 << 32 | 5],
            vec![u64::MAX, 3_969_050_863 << 32, 12_345 << 32],
        ];
        for len in [1usize, 2, 7, 40, 300] {
            rows.push(
                (0..len)
                    .map(|_| {
                        s = mix64(s);
                        s
                    })
                    .collect(),
            );
        }
        // b up to P - 1 needs three offsets in the first block; b up to P - 8, two.
        for cap in [MERSENNE_61 - 1, MERSENNE_61 - 8] {
            let b: Vec<u64> = b.iter().map(|&v| v.min(cap)).collect();
            check_signatures(&a, &b, &rows);
        }
    }

    fn check_signatures(a: &[u64], b: &[u64], rows: &[Vec<u64>]) {
        let perms = Permutations::new(a, b).unwrap();
        let mut mins = Vec::new();
        for shingles in rows {
            let mut got = vec![0u64; a.len()];
            perms.signature(shingles, &mut mins, &mut got);
            let want: Vec<u64> = a
                .iter()
                .zip(b)
                .map(|(&aj, &bj)| {
                    shingles
                        .iter()
                        .map(|&x| slow_permute(x >> 32, aj, bj))
                        .min()
                        .unwrap()
                })
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn short_rows_get_one_shingle_and_empty_rows_none() {
        let mut out = Vec::new();
        shingles_into(&[1, 2], 5, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        shingles_into(&[1, 2, 3, 4, 5, 6], 5, &mut out);
        assert_eq!(out.len(), 2);
        out.clear();
        shingles_into(&[], 5, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn identical_texts_share_signatures_and_empty_rows_are_marked() {
        let col =
            OwnedColumn::from_rows(&["the quick brown fox jumps", "", "the quick brown fox jumps"]);
        let perms = Permutations::new(&[3, 5, 7], &[1, 2, 3]).unwrap();
        let mut sig = vec![0u64; 9];
        let mut counts = vec![0i64; 3];
        signatures(&col.view(), 2, &perms, &mut sig, &mut counts);
        assert_eq!(sig[0..3], sig[6..9]);
        assert_eq!(sig[3..6], [EMPTY; 3]);
        assert_eq!(counts, [5, 0, 5]);
    }

    #[test]
    fn bad_permutations_are_refused() {
        assert!(Permutations::new(&[0], &[1]).is_err());
        assert!(Permutations::new(&[1 << 32], &[1]).is_err());
        assert!(Permutations::new(&[1], &[MERSENNE_61]).is_err());
        assert!(Permutations::new(&[1, 2], &[1]).is_err());
    }
}
