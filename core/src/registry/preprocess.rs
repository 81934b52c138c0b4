//! Image -> input tensor, exactly as `models/README.md` ("Preprocessing, exactly") specifies.
//!
//! `models/training/medinform_train/preprocess.py` is the numpy twin of this module; training
//! uses it, and the parity tests hold the two to the same tensors. Each step works on an 8-bit,
//! interleaved (HWC) buffer and allocates its output once; floating-point operations are done in
//! the same order and precision as the Python code so that the results agree bit for bit.

use image::DynamicImage;
use ndarray::Array3;

use super::manifest::{ColorSpace, InputSpec, Layout, Normalize, PreprocessStep, ResizeFilter};

/// Turns a decoded image into the network's input for one image: `[C, H, W]` (nchw) or
/// `[H, W, C]` (nhwc), float32.
pub fn preprocess(img: &DynamicImage, input: &InputSpec) -> Array3<f32> {
    let pixels = preprocess_u8(img, input);
    normalize(&pixels, &input.normalize, input.layout)
}

/// Colour conversion and the `[[input.preprocess]]` steps, before normalisation: an 8-bit image
/// of `input.width` x `input.height`.
pub fn preprocess_u8(img: &DynamicImage, input: &InputSpec) -> Pixels {
    let (width, height) = (input.width as usize, input.height as usize);
    let mut pixels = Pixels::from_image(img, input.color);
    let mut resized = false;
    for step in &input.preprocess {
        match step {
            PreprocessStep::Resize {
                filter: ResizeFilter::Nearest,
            } => {
                pixels = resize_nearest(&pixels, width, height);
                resized = true;
            }
            PreprocessStep::Resize {
                filter: ResizeFilter::Triangle,
            } => {
                pixels = resize_triangle(&pixels, width, height);
                resized = true;
            }
            PreprocessStep::Sharpen { kernel } => {
                let mut k = [0f32; 9];
                for (dst, src) in k.iter_mut().zip(kernel) {
                    *dst = *src as f32;
                }
                pixels = sharpen(&pixels, &k);
            }
            PreprocessStep::EqualizeHistogram => equalize_histogram(&mut pixels),
        }
    }
    if !resized {
        pixels = resize_triangle(&pixels, width, height);
    }
    pixels
}

/// An 8-bit image with 1 (gray) or 3 (rgb) interleaved channels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Pixels {
    /// Decoded image -> 8-bit `color`: 16-bit samples are reduced by `v >> 8`, float samples are
    /// clamped to [0, 1] and scaled by 255 (rounded half to even), alpha is dropped, and gray is
    /// the BT.601 luma `(299 R + 587 G + 114 B + 500) / 1000` of the 8-bit values.
    pub fn from_image(img: &DynamicImage, color: ColorSpace) -> Self {
        let (width, height) = (img.width() as usize, img.height() as usize);
        let channels = color.channels();
        let mut data = Vec::with_capacity(width * height * channels);
        let mut push = |r: u8, g: u8, b: u8| match color {
            ColorSpace::Gray => data.push(luma(r, g, b)),
            ColorSpace::Rgb => data.extend_from_slice(&[r, g, b]),
        };
        let mut push_gray = |v: u8| push(v, v, v);
        let hi = |v: u16| (v >> 8) as u8;
        let unit = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round_ties_even() as u8;
        match img {
            DynamicImage::ImageLuma8(b) => b.as_raw().iter().for_each(|&v| push_gray(v)),
            DynamicImage::ImageLumaA8(b) => {
                b.as_raw().chunks_exact(2).for_each(|p| push_gray(p[0]))
            }
            DynamicImage::ImageLuma16(b) => b.as_raw().iter().for_each(|&v| push_gray(hi(v))),
            DynamicImage::ImageLumaA16(b) => {
                b.as_raw().chunks_exact(2).for_each(|p| push_gray(hi(p[0])))
            }
            DynamicImage::ImageRgb8(b) => b
                .as_raw()
                .chunks_exact(3)
                .for_each(|p| push(p[0], p[1], p[2])),
            DynamicImage::ImageRgba8(b) => b
                .as_raw()
                .chunks_exact(4)
                .for_each(|p| push(p[0], p[1], p[2])),
            DynamicImage::ImageRgb16(b) => b
                .as_raw()
                .chunks_exact(3)
                .for_each(|p| push(hi(p[0]), hi(p[1]), hi(p[2]))),
            DynamicImage::ImageRgba16(b) => b
                .as_raw()
                .chunks_exact(4)
                .for_each(|p| push(hi(p[0]), hi(p[1]), hi(p[2]))),
            DynamicImage::ImageRgb32F(b) => b
                .as_raw()
                .chunks_exact(3)
                .for_each(|p| push(unit(p[0]), unit(p[1]), unit(p[2]))),
            DynamicImage::ImageRgba32F(b) => b
                .as_raw()
                .chunks_exact(4)
                .for_each(|p| push(unit(p[0]), unit(p[1]), unit(p[2]))),
            // `DynamicImage` is non-exhaustive: a future variant goes through 16-bit RGBA.
            other => other
                .to_rgba16()
                .as_raw()
                .chunks_exact(4)
                .for_each(|p| push(hi(p[0]), hi(p[1]), hi(p[2]))),
        }
        Self {
            width,
            height,
            channels,
            data,
        }
    }

    /// Wraps an interleaved buffer (`data.len() == width * height * channels`).
    pub fn from_raw(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * channels, "pixel buffer size");
        Self {
            width,
            height,
            channels,
            data,
        }
    }
}

/// ITU-R BT.601 luma with integer rounding.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((299 * u32::from(r) + 587 * u32::from(g) + 114 * u32::from(b) + 500) / 1000) as u8
}

// ---------------------------------------------------------------------------------------------
// Resizing

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

// ---------------------------------------------------------------------------------------------
// Sharpen and histogram equalisation, OpenCV semantics

/// OpenCV's default border, `BORDER_REFLECT_101`: `-1 -> 1`, `n -> n - 2` (`gfedcb|abcdefgh|gfedcba`).
#[inline]
fn reflect_101(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n == 1 {
        return 0;
    }
    let j = if i < 0 {
        -i
    } else if i >= n {
        2 * n - 2 - i
    } else {
        i
    };
    j as usize
}

/// `cv::filter2D(src, dst, -1, kernel)` with a 3x3 kernel on each channel: border reflect-101;
/// the non-zero taps, in row-major order, summed in float32 from 0; then OpenCV's
/// `saturate_cast<uchar>(float)`, which rounds with `cvRound`, i.e. half to even, and clamps.
/// With an integer kernel every sum is an exact integer, so the rounding never comes into play.
pub fn sharpen(src: &Pixels, kernel: &[f32; 9]) -> Pixels {
    let (w, h, c) = (src.width, src.height, src.channels);
    let line = w * c;
    // A copy with a one-pixel reflect-101 border, so every tap is a plain offset.
    let padded_line = (w + 2) * c;
    let (left, right) = (reflect_101(-1, w), reflect_101(w as isize, w));
    let mut padded = Vec::with_capacity(padded_line * (h + 2));
    for py in 0..h + 2 {
        let sy = reflect_101(py as isize - 1, h);
        let row = &src.data[sy * line..(sy + 1) * line];
        padded.extend_from_slice(&row[left * c..(left + 1) * c]);
        padded.extend_from_slice(row);
        padded.extend_from_slice(&row[right * c..(right + 1) * c]);
    }
    let taps: Vec<(usize, f32)> = kernel
        .iter()
        .enumerate()
        .filter(|(_, k)| **k != 0.0)
        .map(|(i, &k)| ((i / 3) * padded_line + (i % 3) * c, k))
        .collect();
    let mut data = Vec::with_capacity(line * h);
    let mut acc = vec![0f32; line];
    for y in 0..h {
        acc.fill(0.0);
        let base = y * padded_line;
        for &(offset, k) in &taps {
            let row = &padded[base + offset..base + offset + line];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += k * f32::from(p);
            }
        }
        data.extend(acc.iter().map(|&a| round_half_even_u8(a)));
    }
    Pixels::from_raw(w, h, c, data)
}

/// `saturate_cast<uchar>(float)`: round half to even, then clamp. Clamping to [-1, 256] first
/// changes no result and keeps the value under 2^22, where adding and removing 1.5 * 2^23 rounds
/// to an integer (half to even, the default FP rounding) without a libm call.
#[inline]
fn round_half_even_u8(v: f32) -> u8 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    ((v.clamp(-1.0, 256.0) + ROUND) - ROUND) as u8 // `as` saturates to 0..=255
}

/// OpenCV `equalizeHist`'s lookup table for an 8-bit histogram of `total` samples.
fn equalize_lut(hist: &[u32; 256], total: u32) -> [u8; 256] {
    let mut lut = [0u8; 256];
    let Some(first) = hist.iter().position(|&n| n != 0) else {
        return lut;
    };
    if hist[first] == total {
        lut.fill(first as u8);
        return lut;
    }
    // `float scale = (hist_sz - 1.f)/(total - hist[i]);` then `saturate_cast<uchar>(sum * scale)`.
    let scale = 255.0f32 / (total - hist[first]) as f32;
    let mut sum = 0u32;
    for i in first + 1..256 {
        sum += hist[i];
        lut[i] = (sum as f32 * scale).round_ties_even().clamp(0.0, 255.0) as u8;
    }
    lut
}

/// OpenCV's `CV_DESCALE(x, 14)`: add half, arithmetic shift right (floor).
#[inline]
fn descale(x: i32) -> i32 {
    (x + (1 << 13)) >> 14
}

#[inline]
fn saturate_u8(x: i32) -> u8 {
    x.clamp(0, 255) as u8
}

/// OpenCV `cvtColor(COLOR_RGB2YUV)` for one 8-bit pixel (14-bit fixed point, BT.601).
#[inline]
fn rgb_to_yuv([r, g, b]: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (i32::from(r), i32::from(g), i32::from(b));
    let y = descale(r * 4899 + g * 9617 + b * 1868);
    let u = descale((b - y) * 8061 + (128 << 14));
    let v = descale((r - y) * 14369 + (128 << 14));
    [saturate_u8(y), saturate_u8(u), saturate_u8(v)]
}

/// OpenCV `cvtColor(COLOR_YUV2RGB)` for one 8-bit pixel (14-bit fixed point, BT.601).
#[inline]
fn yuv_to_rgb([y, u, v]: [u8; 3]) -> [u8; 3] {
    let (y, u, v) = (i32::from(y), i32::from(u) - 128, i32::from(v) - 128);
    let r = y + descale(v * 18678);
    let g = y + descale(u * -6472 + v * -9519);
    let b = y + descale(u * 33292);
    [saturate_u8(r), saturate_u8(g), saturate_u8(b)]
}

/// OpenCV `equalizeHist` of a gray image; for rgb, of the Y of OpenCV's RGB->YUV, converted back
/// with OpenCV's YUV->RGB (so U and V go through the 8-bit round trip too).
pub fn equalize_histogram(pixels: &mut Pixels) {
    let mut hist = [0u32; 256];
    let total = (pixels.width * pixels.height) as u32;
    match pixels.channels {
        1 => {
            for &v in &pixels.data {
                hist[usize::from(v)] += 1;
            }
            let lut = equalize_lut(&hist, total);
            for v in &mut pixels.data {
                *v = lut[usize::from(*v)];
            }
        }
        3 => {
            for p in pixels.data.chunks_exact_mut(3) {
                let yuv = rgb_to_yuv([p[0], p[1], p[2]]);
                hist[usize::from(yuv[0])] += 1;
                p.copy_from_slice(&yuv);
            }
            let lut = equalize_lut(&hist, total);
            for p in pixels.data.chunks_exact_mut(3) {
                let rgb = yuv_to_rgb([lut[usize::from(p[0])], p[1], p[2]]);
                p.copy_from_slice(&rgb);
            }
        }
        n => unreachable!("images have 1 or 3 channels here, not {n}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation

/// `x = (pixel * scale - mean[c]) / std[c]`, computed in double precision and rounded once to
/// float32 (a 256-entry table per channel), laid out per `layout`.
pub fn normalize(pixels: &Pixels, norm: &Normalize, layout: Layout) -> Array3<f32> {
    let (w, h, c) = (pixels.width, pixels.height, pixels.channels);
    let luts: Vec<[f32; 256]> = (0..c)
        .map(|ch| {
            let mut lut = [0f32; 256];
            for (v, out) in lut.iter_mut().enumerate() {
                *out = ((v as f64 * norm.scale - norm.mean[ch]) / norm.std[ch]) as f32;
            }
            lut
        })
        .collect();
    match layout {
        Layout::Nhwc => {
            let data = pixels
                .data
                .chunks_exact(c)
                .flat_map(|p| p.iter().zip(&luts).map(|(&v, lut)| lut[usize::from(v)]))
                .collect();
            Array3::from_shape_vec((h, w, c), data).expect("h*w*c values")
        }
        Layout::Nchw => {
            let mut data = vec![0f32; c * h * w];
            for (plane, (out, lut)) in data.chunks_exact_mut(h * w).zip(&luts).enumerate() {
                for (o, p) in out.iter_mut().zip(pixels.data.chunks_exact(c)) {
                    *o = lut[usize::from(p[plane])];
                }
            }
            Array3::from_shape_vec((c, h, w), data).expect("c*h*w values")
        }
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Luma, Rgb, Rgba};

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
    fn luma_is_bt601_with_integer_rounding() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(255, 0, 0), 76); // 76.745 -> (76245 + 500) / 1000
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
        assert_eq!(luma(10, 10, 10), 10);
    }

    #[test]
    fn sixteen_bit_samples_are_reduced_by_shifting() {
        let img =
            ImageBuffer::<Luma<u16>, _>::from_raw(3, 1, vec![0x01ff, 0x8080, 0xffff]).unwrap();
        let px = Pixels::from_image(&DynamicImage::ImageLuma16(img), ColorSpace::Gray);
        assert_eq!(px.data, vec![0x01, 0x80, 0xff]);
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        let img = ImageBuffer::<Rgba<u8>, _>::from_raw(1, 1, vec![200, 100, 50, 0]).unwrap();
        let px = Pixels::from_image(&DynamicImage::ImageRgba8(img), ColorSpace::Rgb);
        assert_eq!(px.data, vec![200, 100, 50]);
    }

    #[test]
    fn gray_images_become_three_equal_channels() {
        let img = ImageBuffer::<Luma<u8>, _>::from_raw(2, 1, vec![7, 9]).unwrap();
        let px = Pixels::from_image(&DynamicImage::ImageLuma8(img), ColorSpace::Rgb);
        assert_eq!(px.data, vec![7, 7, 7, 9, 9, 9]);
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
    fn fast_rounding_matches_the_definitions() {
        let mut v = -300.0f32;
        while v < 300.0 {
            assert_eq!(
                round_half_up_u8(v),
                (v + 0.5).floor().clamp(0.0, 255.0) as u8,
                "{v}"
            );
            assert_eq!(
                round_half_even_u8(v),
                v.round_ties_even().clamp(0.0, 255.0) as u8,
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
            assert_eq!(
                round_half_even_u8(v),
                v.round_ties_even().clamp(0.0, 255.0) as u8,
                "{v}"
            );
        }
    }

    #[test]
    fn triangle_is_identity_at_the_same_size() {
        let px = gray(3, 2, &[1, 2, 3, 4, 5, 6]);
        assert_eq!(resize_triangle(&px, 3, 2), px);
    }

    #[test]
    fn sharpen_uses_reflect_101_borders_and_saturates() {
        let k = [0.0, -1.0, 0.0, -1.0, 6.0, -1.0, 0.0, -1.0, 0.0];
        // Row [10, 20, 30]: x=0 sees left neighbour reflect-101 = 20.
        let out = sharpen(&gray(3, 1, &[10, 20, 30]), &k);
        // Vertical neighbours of a 1-row image are the row itself (reflect-101 with n = 1).
        // x=0: 6*10 - 20 - 20 - 10 - 10 = 0; x=1: 120 - 10 - 30 - 40 = 40; x=2: 180 - 20 - 20 - 60 = 80.
        assert_eq!(out.data, vec![0, 40, 80]);
        let out = sharpen(&gray(2, 2, &[0, 255, 255, 0]), &k);
        assert_eq!(out.data, vec![0, 255, 255, 0]);
    }

    #[test]
    fn sharpen_rounds_half_to_even_like_cv_round() {
        let half = [0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0];
        let out = sharpen(&gray(4, 1, &[1, 3, 5, 7]), &half);
        assert_eq!(out.data, vec![0, 2, 2, 4]);
    }

    #[test]
    fn equalize_matches_opencv_lut() {
        // Histogram: 10 x2, 20 x1, 30 x1 -> scale 255 / (4 - 2); lut[20] = 1 * 127.5 -> 128
        // (half to even), lut[30] = 2 * 127.5 = 255, lut[10] = 0.
        let mut px = gray(4, 1, &[10, 10, 20, 30]);
        equalize_histogram(&mut px);
        assert_eq!(px.data, vec![0, 0, 128, 255]);
        let mut flat = gray(2, 1, &[42, 42]);
        equalize_histogram(&mut flat);
        assert_eq!(flat.data, vec![42, 42]);
    }

    #[test]
    fn yuv_round_trip_matches_opencv_fixed_point() {
        assert_eq!(rgb_to_yuv([255, 255, 255]), [255, 128, 128]);
        assert_eq!(rgb_to_yuv([255, 0, 0]), [76, 91, 255]); // V saturates
        assert_eq!(yuv_to_rgb([76, 91, 255]), [221, 17, 1]);
        assert_eq!(rgb_to_yuv([12, 200, 34]), [125, 83, 29]);
        assert_eq!(yuv_to_rgb([125, 83, 29]), [12, 200, 34]);
        assert_eq!(yuv_to_rgb([0, 128, 128]), [0, 0, 0]);
    }

    #[test]
    fn normalize_lays_out_nchw_and_nhwc() {
        let px = Pixels::from_raw(2, 1, 3, vec![0, 51, 255, 255, 0, 51]);
        let norm = Normalize {
            scale: 1.0 / 255.0,
            mean: vec![0.0, 0.5, 0.0],
            std: vec![1.0, 0.5, 1.0],
        };
        let chw = normalize(&px, &norm, Layout::Nchw);
        assert_eq!(chw.shape(), &[3, 1, 2]);
        assert_eq!(chw[[0, 0, 1]], 1.0);
        assert_eq!(chw[[1, 0, 0]], ((51.0 / 255.0 - 0.5) / 0.5) as f32);
        let hwc = normalize(&px, &norm, Layout::Nhwc);
        assert_eq!(hwc.shape(), &[1, 2, 3]);
        assert_eq!(hwc[[0, 1, 0]], 1.0);
        assert_eq!(hwc[[0, 0, 1]], chw[[1, 0, 0]]);
        // Rounded once from double precision: 1/255 exactly as numpy's `p / 255.0`.
        assert_eq!(hwc[[0, 0, 2]], 1.0);
        assert_eq!(chw[[2, 0, 0]], 1.0);
    }

    #[test]
    fn rgb_image_to_gray_tensor_end_to_end() {
        let img = ImageBuffer::<Rgb<u8>, _>::from_fn(8, 6, |x, y| {
            Rgb([(x * 30) as u8, (y * 40) as u8, 90])
        });
        let spec: InputSpec = toml::from_str(
            r#"
            name = "input"
            layout = "nchw"
            color = "gray"
            width = 4
            height = 3
            [normalize]
            scale = 1.0
            mean = [0.0]
            std = [1.0]
            "#,
        )
        .unwrap();
        let x = preprocess(&DynamicImage::ImageRgb8(img), &spec);
        assert_eq!(x.shape(), &[1, 3, 4]);
        assert!(
            x.iter()
                .all(|v| (0.0..=255.0).contains(v) && v.fract() == 0.0)
        );
    }
}
