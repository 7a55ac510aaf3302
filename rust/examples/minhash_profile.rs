//! Times the MinHash kernels on synthetic English-like rows (no Python involved), so
//! the inner loops can be profiled with `perf record` on their own:
//!
//!     cargo run --release --example minhash_profile -- [rows] [words per row]

use std::time::Instant;

use _nexa_kernels::minhash::{ascii_fingerprints, mix64, signatures, Fingerprints, Permutations};
use _nexa_kernels::text::OwnedColumn;

const VOCAB: [&str; 24] = [
    "the", "model", "returns", "a", "Short", "answer", "when", "asked,", "about", "data;", "each",
    "row", "holds", "text", "and", "some", "words", "repeat", "often", "but", "not", "always.",
    "Quality", "matters",
];

fn rows(n: usize, words: usize) -> Vec<String> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            let mut row = String::new();
            for k in 0..words {
                s = mix64(s);
                if k > 0 {
                    row.push(' ');
                }
                row.push_str(VOCAB[(s % VOCAB.len() as u64) as usize]);
                row.push_str(&format!("{}", s % 97));
            }
            row
        })
        .collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let words: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(47);
    let col = OwnedColumn::from_rows(&rows(n, words));
    let p = 128;
    let a: Vec<u64> = (0..p).map(|i| (mix64(i as u64) >> 32).max(1)).collect();
    let b: Vec<u64> = (0..p).map(|i| mix64(!(i as u64)) >> 3).collect();
    let perms = Permutations::new(&a, &b).expect("valid permutations");

    let mut sig = vec![0u64; n * p];
    let mut counts = vec![0i64; n];
    let start = Instant::now();
    signatures(&col.view(), 5, &perms, &mut sig, &mut counts);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "signatures (u64): {n} rows in {secs:.3} s, {:.0} rows/s",
        n as f64 / secs
    );

    let mut sig32 = vec![0u32; n * p];
    let (mut hashes, mut handled) = (vec![0u64; 2 * n], vec![false; n]);
    let start = Instant::now();
    ascii_fingerprints(
        &col.view(),
        5,
        &perms,
        Fingerprints {
            signatures: &mut sig32,
            hashes: &mut hashes,
            word_counts: &mut counts,
            handled: &mut handled,
        },
    );
    let secs = start.elapsed().as_secs_f64();
    println!(
        "ascii_fingerprints (u32): {n} rows in {secs:.3} s, {:.0} rows/s",
        n as f64 / secs
    );
}
