//! Sequence packing: first-fit decreasing of token lengths into fixed-size bins.

/// A max-tree over the remaining capacity of every bin that may be opened, so the
/// leftmost bin with room for an item is found in O(log n).
struct RoomTree {
    size: usize,
    room: Vec<i64>,
}

impl RoomTree {
    fn new(bins: usize, capacity: i64) -> Self {
        let size = bins.next_power_of_two().max(1);
        let mut room = vec![capacity; 2 * size];
        room[size + bins..].fill(-1);
        for i in (1..size).rev() {
            room[i] = room[2 * i].max(room[2 * i + 1]);
        }
        RoomTree { size, room }
    }

    /// The leftmost bin with at least `need` room (the tree holds one bin per item, so one exists).
    fn leftmost(&self, need: i64) -> usize {
        let mut node = 1;
        while node < self.size {
            node = if self.room[2 * node] >= need {
                2 * node
            } else {
                2 * node + 1
            };
        }
        node - self.size
    }

    fn take(&mut self, bin: usize, amount: i64) {
        let mut node = bin + self.size;
        self.room[node] -= amount;
        while node > 1 {
            node /= 2;
            self.room[node] = self.room[2 * node].max(self.room[2 * node + 1]);
        }
    }
}

/// Bin and start offset of every sequence, and the number of bins used.
///
/// Sequences go in order of decreasing length (ties by index) into the first bin
/// with room, so the result is deterministic.
pub fn first_fit_decreasing(
    lengths: &[i64],
    capacity: i64,
    bins: &mut [i64],
    offsets: &mut [i64],
) -> Result<usize, String> {
    if capacity <= 0 {
        return Err(format!("capacity must be positive, got {capacity}"));
    }
    if let Some((i, &len)) = lengths
        .iter()
        .enumerate()
        .find(|(_, &l)| l < 0 || l > capacity)
    {
        return Err(format!(
            "sequence {i} has length {len}, outside 0..={capacity}"
        ));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(lengths[i]), i));
    let mut tree = RoomTree::new(lengths.len(), capacity);
    let mut used = 0;
    for i in order {
        let bin = tree.leftmost(lengths[i]);
        bins[i] = bin as i64;
        offsets[i] = capacity - tree.room[bin + tree.size];
        tree.take(bin, lengths[i]);
        used = used.max(bin + 1);
    }
    Ok(used)
}

/// Position ids (0.. within each sequence) of every bin into `out` (bins x capacity); `pad` elsewhere.
pub fn position_ids(
    lengths: &[i64],
    bins: &[i64],
    offsets: &[i64],
    capacity: usize,
    pad: i32,
    out: &mut [i32],
) -> Result<(), String> {
    out.fill(pad);
    let num_bins = out.len() / capacity.max(1);
    for i in 0..lengths.len() {
        let (bin, start, len) = (bins[i], offsets[i], lengths[i]);
        if bin < 0
            || bin as usize >= num_bins
            || start < 0
            || len < 0
            || (start + len) as usize > capacity
        {
            return Err(format!(
                "sequence {i} (bin {bin}, offset {start}, length {len}) does not fit the bins"
            ));
        }
        let base = bin as usize * capacity + start as usize;
        for (p, slot) in out[base..base + len as usize].iter_mut().enumerate() {
            *slot = p as i32;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(lengths: &[i64], capacity: i64) -> (Vec<i64>, Vec<i64>, usize) {
        let mut bins = vec![0; lengths.len()];
        let mut offsets = vec![0; lengths.len()];
        let used = first_fit_decreasing(lengths, capacity, &mut bins, &mut offsets).unwrap();
        (bins, offsets, used)
    }

    #[test]
    fn packs_largest_first_into_the_first_bin_with_room() {
        let (bins, offsets, used) = pack(&[3, 7, 5, 5, 2], 10);
        assert_eq!(used, 3);
        assert_eq!(bins, [0, 0, 1, 1, 2]);
        assert_eq!(offsets, [7, 0, 0, 5, 0]);
    }

    #[test]
    fn overlong_or_negative_lengths_are_refused() {
        let mut b = vec![0; 1];
        let mut o = vec![0; 1];
        assert!(first_fit_decreasing(&[11], 10, &mut b, &mut o).is_err());
        assert!(first_fit_decreasing(&[-1], 10, &mut b, &mut o).is_err());
        assert!(first_fit_decreasing(&[1], 0, &mut b, &mut o).is_err());
    }

    #[test]
    fn position_ids_restart_per_sequence_and_pad_the_rest() {
        let lengths = [2, 3];
        let (bins, offsets, used) = pack(&lengths, 6);
        let mut out = vec![0; used * 6];
        position_ids(&lengths, &bins, &offsets, 6, -1, &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 0, 1, -1]);
    }
}
