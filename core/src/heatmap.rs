//! Drawing a result's class activation map at its image's size (`GET /v1/jobs/{id}/heatmap.png`).
//!
//! The network gives a coarse map (one value per cell of its last feature map, e.g. 5 x 5 for a
//! 160 px input): the finding-versus-rest evidence of each cell, which may be negative. It is
//! drawn as class activation maps usually are: only positive evidence, scaled by the map's
//! maximum to 0..1, upsampled bilinearly with cell centres on pixel centres, coloured with the
//! Turbo colour map (blue = little, red = most).

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

use crate::job::Heatmap;

/// How much of the colour an overlay shows where the map is at its maximum.
const OVERLAY_STRENGTH: f32 = 0.5;

/// The map's values as 0..1: `max(v, 0) / max(map)`; all zero when nothing is positive or
/// the values do not fit the size.
pub fn normalised(map: &Heatmap) -> Vec<f32> {
    let len = map.width as usize * map.height as usize;
    let top = map
        .values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0f32, f32::max);
    if map.values.len() != len || top <= 0.0 {
        return vec![0.0; len];
    }
    map.values
        .iter()
        .map(|v| if v.is_finite() { v.max(0.0) / top } else { 0.0 })
        .collect()
}

/// Bilinear upsampling of a `w x h` grid to `width x height`, cell centres on pixel centres,
/// clamped at the edges (OpenCV's `INTER_LINEAR` geometry).
fn upsample(grid: &[f32], w: usize, h: usize, width: u32, height: u32) -> Vec<f32> {
    // For each output coordinate: the two source cells and the weight of the second.
    let taps = |out: u32, src: usize| -> Vec<(usize, usize, f32)> {
        let scale = src as f32 / out as f32;
        (0..out)
            .map(|i| {
                let x = ((i as f32 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f32);
                let lo = x.floor() as usize;
                let hi = (lo + 1).min(src - 1);
                (lo, hi, x - lo as f32)
            })
            .collect()
    };
    let xs = taps(width, w);
    let ys = taps(height, h);
    let mut out = Vec::with_capacity(width as usize * height as usize);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = grid[y0 * w + x0] * (1.0 - fx) + grid[y0 * w + x1] * fx;
            let bottom = grid[y1 * w + x0] * (1.0 - fx) + grid[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The Turbo colour map at `x` in 0..1 (the polynomial approximation published with it).
pub fn turbo(x: f32) -> [u8; 3] {
    let x = x.clamp(0.0, 1.0) as f64;
    let poly = |c: [f64; 6]| {
        let v = c[0] + x * (c[1] + x * (c[2] + x * (c[3] + x * (c[4] + x * c[5]))));
        (v.clamp(0.0, 1.0) * 255.0).round() as u8
    };
    [
        poly([
            0.135_721_38,
            4.615_392_60,
            -42.660_322_58,
            132.131_082_34,
            -152.942_393_96,
            59.286_379_43,
        ]),
        poly([
            0.091_402_61,
            2.194_188_39,
            4.842_966_58,
            -14.185_033_33,
            4.277_298_57,
            2.829_566_04,
        ]),
        poly([
            0.106_673_30,
            12.641_946_08,
            -60.582_048_36,
            110.362_767_71,
            -89.903_109_12,
            27.348_249_73,
        ]),
    ]
}

/// The map at the image's size: with `overlay`, the image (RGB) with the colours blended in
/// where the map is high; without, the colours alone as RGBA whose alpha is the map (to lay
/// over the image at any opacity).
pub fn render(image: &DynamicImage, map: &Heatmap, overlay: bool) -> DynamicImage {
    let (width, height) = (image.width().max(1), image.height().max(1));
    let (w, h) = (map.width.max(1) as usize, map.height.max(1) as usize);
    let mut grid = normalised(map);
    grid.resize(w * h, 0.0);
    let values = upsample(&grid, w, h, width, height);
    if overlay {
        let base = image.to_rgb8();
        let mut out = RgbImage::new(width, height);
        for ((dst, src), v) in out.pixels_mut().zip(base.pixels()).zip(&values) {
            let colour = turbo(*v);
            let a = OVERLAY_STRENGTH * v;
            *dst = Rgb(std::array::from_fn(|c| {
                (src[c] as f32 * (1.0 - a) + colour[c] as f32 * a).round() as u8
            }));
        }
        DynamicImage::ImageRgb8(out)
    } else {
        let mut out = RgbaImage::new(width, height);
        for (dst, v) in out.pixels_mut().zip(&values) {
            let [r, g, b] = turbo(*v);
            *dst = Rgba([r, g, b, (v * 255.0).round() as u8]);
        }
        DynamicImage::ImageRgba8(out)
    }
}

/// PNG bytes of an image.
pub fn png(image: &DynamicImage) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(width: u32, height: u32, values: Vec<f32>) -> Heatmap {
        Heatmap {
            width,
            height,
            values,
        }
    }

    #[test]
    fn only_positive_evidence_is_drawn_relative_to_the_maximum() {
        let m = map(2, 2, vec![-1.0, 0.0, 1.0, 4.0]);
        assert_eq!(normalised(&m), vec![0.0, 0.0, 0.25, 1.0]);
        assert_eq!(normalised(&map(2, 1, vec![-1.0, -2.0])), vec![0.0, 0.0]);
        // Values that do not fit the size draw nothing rather than something misplaced.
        assert_eq!(normalised(&map(2, 2, vec![1.0])), vec![0.0; 4]);
    }

    #[test]
    fn upsampling_puts_cell_centres_on_pixel_centres() {
        // 2 cells over 4 pixels: pixels 0-1 lean to cell 0, 2-3 to cell 1, symmetric.
        let row = upsample(&[0.0, 1.0], 2, 1, 4, 1);
        assert_eq!(row, vec![0.0, 0.25, 0.75, 1.0]);
        // One cell fills the image.
        assert_eq!(upsample(&[0.5], 1, 1, 3, 2), vec![0.5; 6]);
    }

    #[test]
    fn turbo_runs_from_blue_to_red() {
        let [r, _, b] = turbo(0.15);
        assert!(b > 2 * r, "low values are blue: {:?}", turbo(0.15));
        let [r, _, b] = turbo(0.9);
        assert!(r > 2 * b, "high values are red: {:?}", turbo(0.9));
        assert_eq!(turbo(-3.0), turbo(0.0));
        assert_eq!(turbo(7.0), turbo(1.0));
    }

    #[test]
    fn renders_at_the_image_size_with_and_without_overlay() {
        let image = DynamicImage::new_luma8(40, 30);
        let m = map(2, 2, vec![0.0, 0.0, 0.0, 2.0]);

        let overlay = render(&image, &m, true).to_rgb8();
        assert_eq!(overlay.dimensions(), (40, 30));
        // Black image: where the map is zero it stays black, where it peaks it takes colour.
        assert_eq!(overlay.get_pixel(0, 0), &Rgb([0, 0, 0]));
        assert_ne!(overlay.get_pixel(39, 29), &Rgb([0, 0, 0]));

        let alone = render(&image, &m, false).to_rgba8();
        assert_eq!(alone.dimensions(), (40, 30));
        assert_eq!(alone.get_pixel(0, 0)[3], 0);
        assert_eq!(alone.get_pixel(39, 29)[3], 255);

        let bytes = png(&DynamicImage::ImageRgba8(alone)).unwrap();
        let decoded = image::load_from_memory(&bytes).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (40, 30));
    }
}
