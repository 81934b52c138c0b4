//! Image -> input tensor, exactly as `models/README.md` ("Preprocessing, exactly") specifies.
//!
//! `models/training/medinform_train/preprocess.py` is the numpy twin of this module; training
//! uses it, and the parity tests hold the two to the same tensors. Each step works on an 8-bit,
//! interleaved (HWC) buffer and allocates its output once; floating-point operations are done in
//! the same order and precision as the Python code so that the results agree bit for bit.

use image::DynamicImage;
use ndarray::Array3;

use super::manifest::{ColorSpace, InputSpec, Layout, Normalize, PreprocessStep, ResizeFilter};

mod opencv;
mod resize;

pub use opencv::{equalize_histogram, sharpen};
pub use resize::{resize_nearest, resize_triangle};

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
