//! JPEG through libjpeg-turbo (TurboJPEG 3, built from the sources the `turbojpeg` crate
//! vendors), the decoder Pillow bundles: the training pipeline decodes every chest X-ray with
//! Pillow, so the service decodes the same file to the same pixels (`core/tests/it/parity.rs`
//! holds them to an exact match).
//!
//! The output is what Pillow gives for the file: grey JPEGs stay one channel, YCbCr and RGB
//! JPEGs become RGB (accurate integer IDCT, smooth chroma upsampling: libjpeg's defaults, which
//! Pillow keeps), and CMYK/YCCK JPEGs become RGB by Pillow's own conversion (Adobe's inverted
//! CMYK, then `cmyk2rgb`).

use std::cell::RefCell;

use image::{DynamicImage, GrayImage, RgbImage};
use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};

/// A progressive JPEG may hold any number of scans, each a full pass over the image; real
/// encoders write at most a few dozen. More than this is refused (libjpeg-turbo's own advice
/// against scan-count denial of service).
const MAX_SCANS: u32 = 500;

/// What the header says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub width: u32,
    pub height: u32,
    /// Samples per pixel in the file: 1 (grey), 3 (YCbCr, RGB) or 4 (CMYK, YCCK).
    pub components: u16,
}

impl Header {
    /// Bytes of the decoded image (CMYK is decoded to 4 bytes a pixel before it becomes RGB).
    pub fn decoded_bytes(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height) * u64::from(self.components)
    }
}

thread_local! {
    /// One decompressor per thread: creating one allocates libjpeg's state.
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's decompressor.
fn with_decompressor<T>(
    f: impl FnOnce(&mut Decompressor) -> Result<T, String>,
) -> Result<T, String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut fresh = Decompressor::new().map_err(|e| e.to_string())?;
            fresh.set_scan_limit(MAX_SCANS).map_err(|e| e.to_string())?;
            *slot = Some(fresh);
        }
        f(slot.as_mut().expect("set above"))
    })
}

/// Reads the header: dimensions and colour components, no pixels.
pub(super) fn header(bytes: &[u8]) -> Result<Header, String> {
    with_decompressor(|d| {
        let header = d.read_header(bytes).map_err(|e| e.to_string())?;
        let side = |v: usize| u32::try_from(v).map_err(|_| format!("{v} pixels is too large"));
        let components = match header.colorspace {
            Colorspace::Gray => 1,
            Colorspace::YCbCr | Colorspace::RGB => 3,
            Colorspace::CMYK | Colorspace::YCCK => 4,
        };
        Ok(Header {
            width: side(header.width)?,
            height: side(header.height)?,
            components,
        })
    })
}

/// Decodes the whole image as Pillow would.
pub(super) fn decode(bytes: &[u8], header: &Header) -> Result<DynamicImage, String> {
    let (width, height) = (header.width as usize, header.height as usize);
    let format = match header.components {
        1 => PixelFormat::GRAY,
        3 => PixelFormat::RGB,
        _ => PixelFormat::CMYK,
    };
    let pitch = width * format.size();
    let mut pixels = vec![0u8; pitch * height];
    with_decompressor(|d| {
        let output = Image {
            pixels: pixels.as_mut_slice(),
            width,
            pitch,
            height,
            format,
        };
        d.decompress(bytes, output).map_err(|e| e.to_string())
    })?;
    let (w, h) = (header.width, header.height);
    let wrong_size = || "the decoded pixels do not fill the image".to_owned();
    Ok(match format {
        PixelFormat::GRAY => {
            DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, pixels).ok_or_else(wrong_size)?)
        }
        PixelFormat::RGB => {
            DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, pixels).ok_or_else(wrong_size)?)
        }
        _ => DynamicImage::ImageRgb8(
            RgbImage::from_raw(w, h, adobe_cmyk_to_rgb(&pixels)).ok_or_else(wrong_size)?,
        ),
    })
}

/// Pillow's reading of a CMYK JPEG: the samples are taken as Adobe's inverted CMYK
/// (`CMYK;I`), then converted by `cmyk2rgb`: `x = nk - nk * c / 255` with `nk = 255 - k`,
/// where the division is Pillow's rounded `MULDIV255`.
fn adobe_cmyk_to_rgb(cmyk: &[u8]) -> Vec<u8> {
    fn muldiv255(a: u32, b: u32) -> u32 {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    }
    let mut rgb = Vec::with_capacity(cmyk.len() / 4 * 3);
    for px in cmyk.chunks_exact(4) {
        let [c, m, y, k] = [px[0], px[1], px[2], px[3]].map(|v| u32::from(255 - v));
        let nk = 255 - k;
        for v in [c, m, y] {
            rgb.push((nk - muldiv255(v, nk)) as u8);
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_white_black_and_ink() {
        // Inverted on disk: 255 means no ink.
        assert_eq!(adobe_cmyk_to_rgb(&[255, 255, 255, 255]), [255, 255, 255]);
        assert_eq!(adobe_cmyk_to_rgb(&[255, 255, 255, 0]), [0, 0, 0]);
        assert_eq!(adobe_cmyk_to_rgb(&[0, 255, 255, 255]), [0, 255, 255]);
    }
}
