//! Exact-duplicate hashes, LSH banding, candidate pairs and union-find clustering.
//!
//! Mirrors the audit's numpy path: band keys fold a band's signature entries with
//! `acc = (acc ^ v) * BAND_MULT` from `acc = band + 1`, finished by splitmix64; inside
//! a bucket (rows in index order) each member pairs with the bucket's first row and
//! with its predecessor; a pair is kept when the fraction of equal signature entries
//! reaches the threshold; clusters are labelled by their lowest row.

use rayon::prelude::*;
use xxhash_rust::xxh3::xxh3_128;

use crate::minhash::mix64;
use crate::text::TextColumn;

const BAND_MULT: u64 = 0x100_0000_01B3;

/// The 128-bit xxh3 of each row's bytes as (high, low) pairs into `out` (rows x 2).
pub fn text_hashes(texts: &TextColumn<'_>, out: &mut [u64]) {
    assert_eq!(out.len(), texts.len() * 2);
    out.par_chunks_mut(2)
        .enumerate()
        .with_min_len(1024)
        .for_each(|(i, pair)| {
            let h = xxh3_128(texts.bytes(i));
            pair[0] = (h >> 64) as u64;
            pair[1] = h as u64;
        });
}

/// A read-only rows x permutations signature matrix of u32 or u64 entries.
#[derive(Clone, Copy)]
pub enum Signatures<'a> {
    /// The low 16 bits of each MinHash value (what the audit keeps: a quarter of the memory).
    U16(&'a [u16], usize),
    U32(&'a [u32], usize),
    U64(&'a [u64], usize),
}

#[inline]
fn mix_band<T: Copy + Into<u64>>(values: &[T], mut acc: u64) -> u64 {
    for &v in values {
        acc = (acc ^ v.into()).wrapping_mul(BAND_MULT);
    }
    acc
}

#[inline]
fn count_equal<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

impl Signatures<'_> {
    pub fn rows(&self) -> usize {
        match *self {
            Signatures::U16(s, p) => s.len() / p,
            Signatures::U32(s, p) => s.len() / p,
            Signatures::U64(s, p) => s.len() / p,
        }
    }

    pub fn width(&self) -> usize {
        match *self {
            Signatures::U16(_, p) | Signatures::U32(_, p) | Signatures::U64(_, p) => p,
        }
    }

    #[inline]
    fn band_key(&self, row: usize, band: usize, rows_per_band: usize) -> u64 {
        let acc = band as u64 + 1;
        let start = row * self.width() + band * rows_per_band;
        let end = start + rows_per_band;
        mix64(match *self {
            Signatures::U16(s, _) => mix_band(&s[start..end], acc),
            Signatures::U32(s, _) => mix_band(&s[start..end], acc),
            Signatures::U64(s, _) => mix_band(&s[start..end], acc),
        })
    }

    /// How many signature entries rows `u` and `v` share.
    #[inline]
    fn equal_entries(&self, u: usize, v: usize) -> usize {
        let p = self.width();
        let (a, b) = (u * p..(u + 1) * p, v * p..(v + 1) * p);
        match *self {
            Signatures::U16(s, _) => count_equal(&s[a], &s[b]),
            Signatures::U32(s, _) => count_equal(&s[a], &s[b]),
            Signatures::U64(s, _) => count_equal(&s[a], &s[b]),
        }
    }
}

/// Candidate pairs `(u << 32) | v` with `u < v`, sorted and without repeats.
pub fn candidate_pairs(
    sig: &Signatures<'_>,
    valid: &[bool],
    bands: usize,
    rows_per_band: usize,
) -> Vec<u64> {
    let members: Vec<u32> = (0..sig.rows())
        .filter(|&i| valid[i])
        .map(|i| i as u32)
        .collect();
    let mut pairs: Vec<u64> = (0..bands)
        .into_par_iter()
        .flat_map_iter(|band| {
            let mut keyed: Vec<(u64, u32)> = members
                .iter()
                .map(|&r| (sig.band_key(r as usize, band, rows_per_band), r))
                .collect();
            keyed.sort_unstable();
            let mut out = Vec::new();
            let mut start = 0;
            for j in 1..keyed.len() {
                if keyed[j].0 != keyed[start].0 {
                    start = j;
                    continue;
                }
                let v = keyed[j].1 as u64;
                out.push(((keyed[start].1 as u64) << 32) | v);
                if j - 1 != start {
                    out.push(((keyed[j - 1].1 as u64) << 32) | v);
                }
            }
            out
        })
        .collect();
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
}

/// Disjoint sets whose representative is always the smallest member.
pub struct MinUnionFind {
    parent: Vec<u32>,
}

impl MinUnionFind {
    pub fn new(n: usize) -> Self {
        MinUnionFind {
            parent: (0..n as u32).collect(),
        }
    }

    pub fn find(&mut self, mut x: u32) -> u32 {
        let mut root = x;
        while self.parent[root as usize] != root {
            root = self.parent[root as usize];
        }
        while self.parent[x as usize] != root {
            let next = self.parent[x as usize];
            self.parent[x as usize] = root;
            x = next;
        }
        root
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }

    /// The smallest member of every element's set.
    pub fn labels(mut self) -> Vec<i64> {
        (0..self.parent.len() as u32)
            .map(|i| self.find(i) as i64)
            .collect()
    }
}

/// Cluster label per row (its cluster's lowest row) and the number of verified pairs.
pub fn near_duplicate_clusters(
    sig: &Signatures<'_>,
    valid: &[bool],
    threshold: f64,
    bands: usize,
    rows_per_band: usize,
) -> (Vec<i64>, usize) {
    let pairs = candidate_pairs(sig, valid, bands, rows_per_band);
    let width = sig.width() as f64;
    let verified: Vec<u64> = pairs
        .into_par_iter()
        .filter(|&p| {
            let (u, v) = ((p >> 32) as usize, (p & 0xFFFF_FFFF) as usize);
            sig.equal_entries(u, v) as f64 / width >= threshold
        })
        .collect();
    let mut sets = MinUnionFind::new(sig.rows());
    for &p in &verified {
        sets.union((p >> 32) as u32, p as u32);
    }
    (sets.labels(), verified.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_find_labels_by_lowest_member() {
        let mut uf = MinUnionFind::new(6);
        uf.union(4, 2);
        uf.union(5, 4);
        uf.union(1, 3);
        assert_eq!(uf.labels(), [0, 1, 2, 1, 2, 2]);
    }

    #[test]
    fn identical_signatures_cluster_and_invalid_rows_stay_alone() {
        let sig: Vec<u32> = [1, 2, 3, 4, 9, 9, 9, 9, 1, 2, 3, 4, 1, 2, 3, 4].to_vec();
        let s = Signatures::U32(&sig, 4);
        let (labels, pairs) = near_duplicate_clusters(&s, &[true, true, true, false], 0.9, 2, 2);
        assert_eq!(labels, [0, 1, 0, 3]);
        assert_eq!(pairs, 1);
    }

    #[test]
    fn sixteen_bit_signatures_cluster_like_wider_ones() {
        let wide: Vec<u32> = [0x1_0001, 2, 3, 4, 9, 9, 9, 9, 0x5_0001, 2, 3, 4].to_vec();
        let low: Vec<u16> = wide.iter().map(|&v| v as u16).collect();
        let (a, _) = near_duplicate_clusters(&Signatures::U32(&wide, 4), &[true; 3], 0.9, 2, 2);
        let (b, _) = near_duplicate_clusters(&Signatures::U16(&low, 4), &[true; 3], 0.9, 2, 2);
        // Rows 0 and 2 differ only above bit 16: the 16-bit view sees them as equal there.
        assert_eq!(a, [0, 1, 2]);
        assert_eq!(b, [0, 1, 0]);
    }

    #[test]
    fn pairs_below_the_threshold_are_dropped() {
        let sig: Vec<u64> = [1, 2, 3, 4, 1, 2, 7, 8].to_vec();
        let s = Signatures::U64(&sig, 4);
        let (labels, pairs) = near_duplicate_clusters(&s, &[true, true], 0.6, 2, 2);
        assert_eq!((labels, pairs), (vec![0, 1], 0));
        let (labels, _) = near_duplicate_clusters(&s, &[true, true], 0.5, 2, 2);
        assert_eq!(labels, [0, 0]);
    }
}
