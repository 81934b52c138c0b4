//! Resizing as Pillow does it: `NEAREST` (`ImagingScaleAffine`) and the antialiased
//! `BILINEAR` filter (`precompute_coeffs`), on 8-bit interleaved pixels.

use super::Pixels;

/// PIL `NEAREST` source indices: Pillow's `ImagingScaleAffine` starts at `0.5 * s` and adds
/// `s = src / dst` (in double precision) for each output index, truncating. This is
/// `floor((i + 0.5) * src / dst)` except where the accumulated rounding crosses an integer, and
/// there Pillow's choice is the one the original pipeline made.
fn nearest_indices(src_len: usize, dst_len: usize) -> Vec<usize> {
    let step = src_len as f64 / dst_len as f64;
    let mut position = step * 0.5;
    let mut indices = Vec::with_capacity(dst_len);
    for _ in 0..dst_len {
        indices.push((position as usize).min(src_len - 1));
        position += step;
    }
    indices
}

/// Nearest-neighbour resize to `width` x `height`, PIL `NEAREST`.
pub fn resize_nearest(src: &Pixels, width: usize, height: usize) -> Pixels {
    if src.width == width && src.height == height {
        return src.clone();
    }
    let c = src.channels;
    let cols = nearest_indices(src.width, width);
    let rows = nearest_indices(src.height, height);
    let mut data = Vec::with_capacity(width * height * c);
    for &y in &rows {
        let row = &src.data[y * src.width * c..(y + 1) * src.width * c];
        for &x in &cols {
            data.extend_from_slice(&row[x * c..(x + 1) * c]);
        }
    }
    Pixels::from_raw(width, height, c, data)
}

/// The taps of a 1-D triangle (PIL `BILINEAR`) resampling from `src_len` to `dst_len`.
struct TriangleTaps {
    /// First source index read by each output index.
    first: Vec<usize>,
    /// Number of taps of each output index.
    count: Vec<usize>,
    /// `dst_len` rows of `stride` weights.
    weights: Vec<f32>,
    stride: usize,
}

impl TriangleTaps {
    /// Pillow's `precompute_coeffs` with the bilinear filter: support 1 scaled by the downscale
    /// factor, weights normalised in double precision, then rounded to float32.
    fn new(src_len: usize, dst_len: usize) -> Self {
        let scale = src_len as f64 / dst_len as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale;
        let stride = support.ceil() as usize * 2 + 1;
        let inv = 1.0 / filter_scale;
        let mut first = Vec::with_capacity(dst_len);
        let mut count = Vec::with_capacity(dst_len);
        let mut weights = vec![0f32; dst_len * stride];
        let mut row = Vec::with_capacity(stride);
        for i in 0..dst_len {
            let center = (i as f64 + 0.5) * scale;
            // `as` truncates towards zero, like C's and Python's `int()`.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(src_len as i64) as usize;
            row.clear();
            let mut total = 0.0f64;
            for x in lo..hi {
                let t = ((x as f64 - center + 0.5) * inv).abs();
                let w = if t < 1.0 { 1.0 - t } else { 0.0 };
                row.push(w);
                total += w;
            }
            for (k, w) in row.iter().enumerate() {
                let w = if total != 0.0 { w / total } else { *w };
                weights[i * stride + k] = w as f32;
            }
            first.push(lo);
            count.push(row.len());
        }
        Self {
            first,
            count,
            weights,
            stride,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let start = i * self.stride;
        (self.first[i], &self.weights[start..start + self.count[i]])
    }
}

/// `clamp(floor(v + 0.5), 0, 255)`: round half up and clamp. `as` truncates towards zero, which
/// is the floor for every value it does not saturate to 0 or 255, and avoids a libm call.
#[inline]
fn round_half_up_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// Separable antialiased bilinear resize: horizontal pass, then vertical pass, each in float32
/// and rounded to u8. A pass whose length does not change is skipped (it is the identity).
pub fn resize_triangle(src: &Pixels, width: usize, height: usize) -> Pixels {
    let horizontal = if src.width != width {
        resize_triangle_horizontal(src, width)
    } else {
        src.clone()
    };
    if horizontal.height != height {
        resize_triangle_vertical(&horizontal, height)
    } else {
        horizontal
    }
}

fn resize_triangle_horizontal(src: &Pixels, width: usize) -> Pixels {
    let taps = TriangleTaps::new(src.width, width);
    let data = match src.channels {
        1 => horizontal_pass::<1>(src, &taps, width),
        3 => horizontal_pass::<3>(src, &taps, width),
        n => unreachable!("images have 1 or 3 channels here, not {n}"),
    };
    Pixels::from_raw(width, src.height, src.channels, data)
}

fn horizontal_pass<const C: usize>(src: &Pixels, taps: &TriangleTaps, width: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(width * src.height * C);
    for row in src.data.chunks_exact(src.width * C) {
        for x in 0..width {
            let (first, weights) = taps.taps(x);
            let window = &row[first * C..(first + weights.len()) * C];
            let mut acc = [0f32; C];
            for (&w, p) in weights.iter().zip(window.chunks_exact(C)) {
                for ch in 0..C {
                    acc[ch] += w * f32::from(p[ch]);
                }
            }
            data.extend(acc.map(round_half_up_u8));
        }
    }
    data
}

fn resize_triangle_vertical(src: &Pixels, height: usize) -> Pixels {
    let line = src.width * src.channels;
    let taps = TriangleTaps::new(src.height, height);
    let mut data = vec![0u8; line * height];
    let mut acc = vec![0f32; line];
    for (y, out) in data.chunks_exact_mut(line).enumerate() {
        let (first, weights) = taps.taps(y);
        acc.fill(0.0);
        for (k, &w) in weights.iter().enumerate() {
            let row = &src.data[(first + k) * line..(first + k + 1) * line];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += w * f32::from(p);
            }
        }
        for (o, &a) in out.iter_mut().zip(&acc) {
            *o = round_half_up_u8(a);
        }
    }
    Pixels::from_raw(src.width, height, src.channels, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: usize, height: usize, data: &[u8]) -> Pixels {
        Pixels::from_raw(width, height, 1, data.to_vec())
    }

    #[test]
    fn nearest_indices_follow_pillow_accumulation() {
        // 4 -> 50: (12 + 0.5) * 4 / 50 is exactly 1.0, but 0.04 + 12 * 0.08 accumulated in
        // double precision stays just under 1: Pillow (and so the original pipeline) reads index 0.
        let idx = nearest_indices(4, 50);
        assert_eq!(&idx[11..14], &[0, 0, 1]);
        assert_eq!(nearest_indices(4, 2), vec![1, 3]);
        assert_eq!(nearest_indices(2, 4), vec![0, 0, 1, 1]);
        assert_eq!(nearest_indices(5, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn triangle_taps_sum_to_one_and_average_on_downscale() {
        let taps = TriangleTaps::new(4, 2);
        for i in 0..2 {
            let (_, w) = taps.taps(i);
            let sum: f32 = w.iter().sum();
            assert!((sum - 1.0).abs() < 1e-6);
        }
        let out = resize_triangle(&gray(4, 1, &[0, 100, 200, 255]), 2, 1);
        // Halving [0, 100, 200, 255]: weights 3/7, 3/7, 1/7 around each output pixel (support 2).
        assert_eq!(out.data, vec![71, 209]); // 500/7 = 71.4, 1465/7 = 209.3
    }

    #[test]
    fn triangle_is_identity_at_the_same_size() {
        let px = gray(3, 2, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(resize_triangle(&px, 3, 2), px);
    }

    #[test]
    fn fast_half_up_rounding_matches_its_definition() {
        let mut v = -300.0f32;
        while v < 300.0 {
            assert_eq!(
                round_half_up_u8(v),
                (v + 0.5).floor().clamp(0.0, 255.0) as u8,
                "{v}"
            );
            v += 0.125;
        }
        for v in [1e9f32, -1e9, 254.5, 255.5, 0.5, 1.5, 2.5, -0.5] {
            assert_eq!(
                round_half_up_u8(v),
                (v + 0.5).floor().clamp(0.0, 255.0) as u8,
                "{v}"
            );
        }
    }
}
