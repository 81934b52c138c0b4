//! Sharpening and histogram equalisation with OpenCV semantics (`filter2D`, `equalizeHist`,
//! `cvtColor` RGB<->YUV in 14-bit fixed point), as the original MedInform pipeline used them.

use super::Pixels;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: usize, height: usize, data: &[u8]) -> Pixels {
        Pixels::from_raw(width, height, 1, data.to_vec())
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
    fn fast_half_even_rounding_matches_its_definition() {
        let mut v = -300.0f32;
        while v < 300.0 {
            assert_eq!(
                round_half_even_u8(v),
                v.round_ties_even().clamp(0.0, 255.0) as u8,
                "{v}"
            );
            v += 0.125;
        }
        for v in [1e9f32, -1e9, 254.5, 255.5, 0.5, 1.5, 2.5, -0.5] {
            assert_eq!(
                round_half_even_u8(v),
                v.round_ties_even().clamp(0.0, 255.0) as u8,
                "{v}"
            );
        }
    }
}
