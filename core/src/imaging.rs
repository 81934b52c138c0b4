//! Uploaded images: what is accepted, and decoding that cannot be turned against the service.
//!
//! [`validate`] runs at upload time and [`decode`] in the worker; both apply the same checks in
//! the same order, cheapest first:
//! 1. the byte size (`empty_file`, `image_too_large`);
//! 2. the format, sniffed from the magic bytes, never from a name or a declared content type
//!    (`unsupported_image_format` for formats we recognise but do not take, e.g. GIF;
//!    `not_an_image` otherwise); a DICOM file then goes through [`dicom`]'s checks (transfer
//!    syntax, pixel data, frames);
//! 3. the dimensions and the decoded size (pixels x channels x bytes per sample), read from the
//!    header alone, so a decompression bomb (a few bytes declaring 100000 x 100000 pixels, or a
//!    381 KB PNG of 7000 x 7000 16-bit RGBA zeros that decodes to 392 MB) is refused before any
//!    pixel buffer exists (`image_dimensions_too_large`);
//! 4. a full decode under [`image::Limits`], so a truncated or damaged file is refused
//!    (`corrupt_image`) rather than half-read.
//!
//! Decodes in flight share one budget of bytes per process ([`set_decode_budget`]): a decode
//! waits until the images being decoded or held elsewhere leave room for its own, so a burst of
//! large uploads queues instead of taking the process's memory.

mod budget;
pub mod dicom;
mod jpeg;

use std::io::Cursor;

pub use self::budget::{
    BudgetPermit, DEFAULT_DECODE_BUDGET, DecodeBudget, decode_budget, set_decode_budget,
};
pub use self::dicom::{DicomAttributes, PatientData};

use image::{DynamicImage, ImageDecoder, ImageError, ImageReader};
use serde::Serialize;

use crate::job::FailureCode;

/// Limits on an uploaded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Largest accepted file, in bytes.
    pub max_bytes: usize,
    /// Largest accepted width * height.
    pub max_pixels: u64,
    /// Largest decoded image: width * height * channels * bytes per sample.
    pub max_decoded_bytes: u64,
}

impl Default for ImageLimits {
    /// 20 MiB, 50 megapixels and 200 MiB decoded: any clinical photograph or radiograph export
    /// (a 50-megapixel RGB photograph, a 16-bit 7000 x 7000 radiograph), with room.
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_pixels: 50_000_000,
            max_decoded_bytes: 200 * 1024 * 1024,
        }
    }
}

/// A decoded image, holding its bytes of the process's decode budget until it is dropped.
#[derive(Debug)]
pub struct Decoded {
    pub image: DynamicImage,
    /// What the file said about its study, when it was a DICOM file.
    pub dicom: Option<Box<DicomAttributes>>,
    _permit: BudgetPermit<'static>,
}

impl std::ops::Deref for Decoded {
    type Target = DynamicImage;

    fn deref(&self) -> &DynamicImage {
        &self.image
    }
}

/// The image formats MedInform accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    Png,
    Jpeg,
    Bmp,
    Tiff,
    WebP,
    Dicom,
}

impl ImageFormat {
    /// The MIME type.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Bmp => "image/bmp",
            Self::Tiff => "image/tiff",
            Self::WebP => "image/webp",
            Self::Dicom => "application/dicom",
        }
    }

    /// The usual name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Bmp => "BMP",
            Self::Tiff => "TIFF",
            Self::WebP => "WebP",
            Self::Dicom => "DICOM",
        }
    }

    /// The `image` crate's decoder for the format (JPEG and DICOM have decoders of their own).
    fn to_image_format(self) -> Option<image::ImageFormat> {
        match self {
            Self::Png => Some(image::ImageFormat::Png),
            Self::Bmp => Some(image::ImageFormat::Bmp),
            Self::Tiff => Some(image::ImageFormat::Tiff),
            Self::WebP => Some(image::ImageFormat::WebP),
            Self::Jpeg | Self::Dicom => None,
        }
    }
}

/// What an accepted upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

const ACCEPTED: &str = "PNG, JPEG, BMP, TIFF, WebP or DICOM";

/// Why an upload is refused. [`ImageRejection::code`] is stable (API clients match on it); the
/// message tells a person what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRejection {
    #[error("the file is empty: choose an image file and upload it again")]
    EmptyFile,
    #[error(
        "the file is {size} bytes, over the limit of {max} bytes: upload a smaller export of the image"
    )]
    ImageTooLarge { size: usize, max: usize },
    #[error(
        "{format} images are not accepted: convert the image to {ACCEPTED} and upload it again"
    )]
    UnsupportedImageFormat { format: &'static str },
    #[error("the file is not an image MedInform can read: upload a {ACCEPTED} file")]
    NotAnImage,
    #[error(
        "the {format} image could not be decoded ({detail}); the file may be truncated or damaged: export it again and upload the new file"
    )]
    CorruptImage {
        format: &'static str,
        detail: String,
    },
    #[error(
        "the image is {width} x {height} pixels, over the limit of {max} pixels: downscale it before uploading"
    )]
    ImageDimensionsTooLarge { width: u32, height: u32, max: u64 },
    #[error(
        "the image is {width} x {height} pixels of {bytes_per_pixel} bytes each, {bytes} bytes once decoded, over the limit of {max} bytes: export it with 8-bit samples or downscale it"
    )]
    DecodedTooLarge {
        width: u32,
        height: u32,
        bytes_per_pixel: u16,
        bytes: u64,
        max: u64,
    },
    #[error(
        "the DICOM file's transfer syntax {uid}{} is not one MedInform decodes: send it uncompressed (Explicit VR Little Endian), RLE, JPEG or JPEG 2000",
        name.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
    )]
    UnsupportedTransferSyntax { uid: String, name: Option<String> },
    #[error(
        "the DICOM object holds {frames} frames; the models screen one image: send a single-frame object"
    )]
    MultiframeNotSupported { frames: u32 },
    #[error(
        "the DICOM file holds no pixel data (0x7FE0,0x0010): send the image object, not a report or a structured document"
    )]
    NoPixelData,
    #[error("the DICOM image cannot be screened: {detail}")]
    UnsupportedDicomImage { detail: String },
    #[error("the {model} model does not screen this DICOM image: {detail}")]
    ModalityMismatch { model: String, detail: String },
}

impl ImageRejection {
    /// The stable machine-readable code (also a job's, when it fails on this image).
    pub fn code(&self) -> FailureCode {
        match self {
            Self::EmptyFile => FailureCode::EmptyFile,
            Self::ImageTooLarge { .. } => FailureCode::ImageTooLarge,
            Self::UnsupportedImageFormat { .. } => FailureCode::UnsupportedImageFormat,
            Self::NotAnImage => FailureCode::NotAnImage,
            Self::CorruptImage { .. } => FailureCode::CorruptImage,
            Self::ImageDimensionsTooLarge { .. } | Self::DecodedTooLarge { .. } => {
                FailureCode::ImageDimensionsTooLarge
            }
            Self::UnsupportedTransferSyntax { .. } => FailureCode::UnsupportedTransferSyntax,
            Self::MultiframeNotSupported { .. } => FailureCode::MultiframeNotSupported,
            Self::NoPixelData => FailureCode::NoPixelData,
            Self::UnsupportedDicomImage { .. } => FailureCode::UnsupportedImageFormat,
            Self::ModalityMismatch { .. } => FailureCode::ModalityMismatch,
        }
    }
}

/// Checks an upload completely (including a full decode) and says what it is.
pub fn validate(bytes: &[u8], limits: &ImageLimits) -> Result<ImageInfo, ImageRejection> {
    decode_with_info(bytes, limits).map(|(info, _)| info)
}

/// [`validate`]'s checks, then the decoded image. Blocks while the decode budget is spent.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Decoded, ImageRejection> {
    decode_with_info(bytes, limits).map(|(_, img)| img)
}

/// The checks and the decoded image with what it is.
pub fn decode_with_info(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<(ImageInfo, Decoded), ImageRejection> {
    if bytes.is_empty() {
        return Err(ImageRejection::EmptyFile);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ImageRejection::ImageTooLarge {
            size: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let format = match sniff(bytes) {
        Sniffed::Supported(format) => format,
        Sniffed::Unsupported(format) => {
            return Err(ImageRejection::UnsupportedImageFormat { format });
        }
        Sniffed::Unknown => return Err(ImageRejection::NotAnImage),
    };
    if format == ImageFormat::Dicom {
        let (geometry, image, attributes, permit) = dicom::decode(bytes, limits)?;
        let info = ImageInfo {
            format,
            content_type: format.content_type(),
            width: geometry.width,
            height: geometry.height,
        };
        let decoded = Decoded {
            image,
            dicom: Some(Box::new(attributes)),
            _permit: permit,
        };
        return Ok((info, decoded));
    }
    let corrupt = |e: ImageError| classify(e, format);
    let damaged = |detail: String| ImageRejection::CorruptImage {
        format: format.name(),
        detail,
    };

    // The header alone: dimensions before a single pixel is allocated.
    let (width, height, decoded_bytes, bytes_per_pixel, jpeg_header) =
        if format == ImageFormat::Jpeg {
            let header = jpeg::header(bytes).map_err(damaged)?;
            let (w, h, size) = (header.width, header.height, header.decoded_bytes());
            (w, h, size, header.components, Some(header))
        } else {
            let decoder = reader(bytes, format, limits)
                .into_decoder()
                .map_err(corrupt)?;
            let (w, h) = decoder.dimensions();
            let bytes_per_pixel = decoder.color_type().bytes_per_pixel().into();
            (w, h, decoder.total_bytes(), bytes_per_pixel, None)
        };
    if width == 0 || height == 0 {
        return Err(ImageRejection::CorruptImage {
            format: format.name(),
            detail: format!("the header declares {width} x {height} pixels"),
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageRejection::ImageDimensionsTooLarge {
            width,
            height,
            max: limits.max_pixels,
        });
    }
    if decoded_bytes > limits.max_decoded_bytes {
        return Err(ImageRejection::DecodedTooLarge {
            width,
            height,
            bytes_per_pixel,
            bytes: decoded_bytes,
            max: limits.max_decoded_bytes,
        });
    }

    if format == ImageFormat::Jpeg && !jpeg_reaches_eoi(bytes) {
        // libjpeg fills a truncated scan with grey and only warns: check first.
        return Err(ImageRejection::CorruptImage {
            format: format.name(),
            detail: "the file ends before the end-of-image marker".into(),
        });
    }
    let permit = decode_budget().acquire(decoded_bytes);
    let img = match jpeg_header {
        Some(header) => jpeg::decode(bytes, &header).map_err(damaged)?,
        None => reader(bytes, format, limits).decode().map_err(corrupt)?,
    };
    let img = Decoded {
        image: img,
        dicom: None,
        _permit: permit,
    };
    let info = ImageInfo {
        format,
        content_type: format.content_type(),
        width: img.width(),
        height: img.height(),
    };
    Ok((info, img))
}

fn reader<'a>(
    bytes: &'a [u8],
    format: ImageFormat,
    limits: &ImageLimits,
) -> ImageReader<Cursor<&'a [u8]>> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    if let Some(format) = format.to_image_format() {
        reader.set_format(format);
    }
    reader.limits(decoder_limits(limits));
    reader
}

/// The decoder's allocation budget: the largest accepted decoded image, plus 16 MiB for the
/// decoders' own buffers.
fn decoder_limits(limits: &ImageLimits) -> image::Limits {
    let side = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
    let mut out = image::Limits::default();
    out.max_image_width = Some(side);
    out.max_image_height = Some(side);
    out.max_alloc = Some(limits.max_decoded_bytes.saturating_add(16 << 20));
    out
}

fn classify(error: ImageError, format: ImageFormat) -> ImageRejection {
    match error {
        ImageError::Limits(e) => ImageRejection::CorruptImage {
            // Only reachable when a header under-declares what decoding then needs.
            format: format.name(),
            detail: format!("decoding exceeds the memory limit: {e}"),
        },
        ImageError::Unsupported(e) => ImageRejection::CorruptImage {
            format: format.name(),
            detail: format!("a feature of this file is not supported: {e}"),
        },
        other => ImageRejection::CorruptImage {
            format: format.name(),
            detail: other.to_string(),
        },
    }
}

/// Whether a JPEG's marker structure reaches the end-of-image marker (`FF D9`). Segments are
/// skipped by their declared length (so an EXIF thumbnail's own `FF D9` does not count), and in
/// entropy-coded data `FF 00` (a stuffed byte) and `FF D0`..`FF D7` (restarts) are data. Bytes
/// after the EOI (some cameras append metadata there) are ignored.
fn jpeg_reaches_eoi(bytes: &[u8]) -> bool {
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            // Scan data, or stray bytes between segments (tolerated, as decoders do): on to
            // the next 0xFF.
            match memchr::memchr(0xFF, &bytes[i..]) {
                Some(skip) => i += skip,
                None => return false,
            }
            continue;
        }
        match bytes[i + 1] {
            0xD9 => return true,
            // Fill byte, stuffed zero, restart markers, TEM and SOI carry no length.
            0xFF => i += 1,
            0x00 | 0x01 | 0xD0..=0xD8 => i += 2,
            _ => {
                let Some(len) = bytes.get(i + 2..i + 4) else {
                    return false;
                };
                i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
            }
        }
    }
    false
}

enum Sniffed {
    Supported(ImageFormat),
    /// Recognised, but not taken (the name, for the message).
    Unsupported(&'static str),
    Unknown,
}

/// The format from the magic bytes.
fn sniff(bytes: &[u8]) -> Sniffed {
    use Sniffed::{Supported, Unknown, Unsupported};
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    // First: a DICOM file's 128-byte preamble may itself be a TIFF header (PS3.10 7.5).
    if bytes.get(128..132) == Some(b"DICM") {
        Supported(ImageFormat::Dicom)
    } else if starts(b"\x89PNG\r\n\x1a\n") {
        Supported(ImageFormat::Png)
    } else if starts(&[0xFF, 0xD8, 0xFF]) {
        Supported(ImageFormat::Jpeg)
    } else if starts(b"BM") && bytes.len() >= 14 {
        Supported(ImageFormat::Bmp)
    } else if starts(b"II*\0") || starts(b"MM\0*") || starts(b"II+\0") || starts(b"MM\0+") {
        Supported(ImageFormat::Tiff)
    } else if starts(b"RIFF") && bytes.get(8..12) == Some(b"WEBP") {
        Supported(ImageFormat::WebP)
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Unsupported("GIF")
    } else if bytes.get(4..8) == Some(b"ftyp") {
        Unsupported("HEIF/AVIF")
    } else if starts(b"\0\0\0\x0cjP  \r\n\x87\n") || starts(&[0xFF, 0x4F, 0xFF, 0x51]) {
        Unsupported("JPEG 2000")
    } else if starts(b"\0\0\0\x0cJXL \r\n\x87\n") || starts(&[0xFF, 0x0A]) {
        Unsupported("JPEG XL")
    } else if starts(b"8BPS") {
        Unsupported("Photoshop (PSD)")
    } else if starts(&[0, 0, 1, 0]) {
        Unsupported("ICO")
    } else if starts(b"qoif") {
        Unsupported("QOI")
    } else if starts(&[0x76, 0x2F, 0x31, 0x01]) {
        Unsupported("OpenEXR")
    } else if starts(b"%PDF") {
        Unsupported("PDF")
    } else if starts(b"<svg") {
        Unsupported("SVG")
    } else {
        Unknown
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Rgb, Rgba};

    use super::*;

    const LIMITS: ImageLimits = ImageLimits {
        max_bytes: 1 << 20,
        max_pixels: 1_000_000,
        max_decoded_bytes: 8 << 20,
    };

    fn sample() -> DynamicImage {
        DynamicImage::ImageRgb8(ImageBuffer::from_fn(64, 48, |x, y| {
            Rgb([(x * 4) as u8, (y * 5) as u8, ((x + y) * 2) as u8])
        }))
    }

    fn encode(img: &DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn code(bytes: &[u8]) -> FailureCode {
        validate(bytes, &LIMITS).unwrap_err().code()
    }

    /// A PNG chunk: length, type, data, CRC-32 of type and data.
    fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut crc = 0xFFFF_FFFFu32;
            for &b in bytes {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xEDB8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            !crc
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc_input = kind.to_vec();
        crc_input.extend_from_slice(data);
        out.extend_from_slice(&crc32(&crc_input).to_be_bytes());
        out
    }

    #[test]
    fn all_five_formats_are_accepted() {
        let img = sample();
        let rgba = DynamicImage::ImageRgba8(img.to_rgba8());
        for (format, source, expected) in [
            (image::ImageFormat::Png, &img, ImageFormat::Png),
            (image::ImageFormat::Jpeg, &img, ImageFormat::Jpeg),
            (image::ImageFormat::Bmp, &img, ImageFormat::Bmp),
            (image::ImageFormat::Tiff, &img, ImageFormat::Tiff),
            (image::ImageFormat::WebP, &rgba, ImageFormat::WebP),
        ] {
            let bytes = encode(source, format);
            let info = validate(&bytes, &LIMITS).unwrap_or_else(|e| panic!("{format:?}: {e}"));
            assert_eq!(info.format, expected);
            assert_eq!(info.content_type, expected.content_type());
            assert_eq!((info.width, info.height), (64, 48));
            let decoded = decode(&bytes, &LIMITS).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (64, 48));
        }
    }

    #[test]
    fn sixteen_bit_png_is_accepted_and_kept_at_16_bits() {
        let img = DynamicImage::ImageRgb16(ImageBuffer::from_fn(20, 10, |x, y| {
            Rgb([(x * 3000) as u16, (y * 6000) as u16, 65535])
        }));
        let bytes = encode(&img, image::ImageFormat::Png);
        assert_eq!(validate(&bytes, &LIMITS).unwrap().format, ImageFormat::Png);
        assert!(matches!(
            decode(&bytes, &LIMITS).unwrap().image,
            DynamicImage::ImageRgb16(_)
        ));
    }

    #[test]
    fn empty_file() {
        assert_eq!(code(b""), "empty_file");
    }

    #[test]
    fn too_many_bytes() {
        let limits = ImageLimits {
            max_bytes: 100,
            ..LIMITS
        };
        let bytes = encode(&sample(), image::ImageFormat::Png);
        let err = validate(&bytes, &limits).unwrap_err();
        assert_eq!(err.code(), "image_too_large");
        assert!(err.to_string().contains("100 bytes"), "{err}");
    }

    #[test]
    fn gif_is_recognised_but_unsupported() {
        let err = validate(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", &LIMITS).unwrap_err();
        assert_eq!(err.code(), "unsupported_image_format");
        assert!(
            err.to_string().starts_with("GIF images are not accepted"),
            "{err}"
        );
    }

    #[test]
    fn a_dicom_preamble_without_a_data_set_is_corrupt() {
        let mut dicom = vec![0u8; 132];
        dicom[128..132].copy_from_slice(b"DICM");
        assert_eq!(code(&dicom), "corrupt_image");
    }

    #[test]
    fn text_is_not_an_image() {
        assert_eq!(code(b"patient,finding\n1,none\n"), "not_an_image");
        assert_eq!(code(&[0u8; 10]), "not_an_image");
    }

    #[test]
    fn truncated_png_is_corrupt() {
        let bytes = encode(&sample(), image::ImageFormat::Png);
        assert_eq!(code(&bytes[..bytes.len() / 2]), "corrupt_image");
        assert_eq!(code(&bytes[..20]), "corrupt_image");
    }

    #[test]
    fn truncated_jpeg_is_corrupt() {
        let bytes = encode(&sample(), image::ImageFormat::Jpeg);
        for cut in [bytes.len() - 2, bytes.len() * 2 / 3, bytes.len() / 3, 40] {
            assert_eq!(
                code(&bytes[..cut]),
                "corrupt_image",
                "cut at {cut} of {}",
                bytes.len()
            );
        }
    }

    /// The end-of-image scan, one byte at a time: what [`jpeg_reaches_eoi`] must answer.
    fn reaches_eoi_byte_by_byte(bytes: &[u8]) -> bool {
        let mut i = 2;
        while i + 1 < bytes.len() {
            if bytes[i] != 0xFF {
                i += 1;
                continue;
            }
            match bytes[i + 1] {
                0xD9 => return true,
                0xFF => i += 1,
                0x00 | 0x01 | 0xD0..=0xD8 => i += 2,
                _ => match bytes.get(i + 2..i + 4) {
                    Some(len) => i += 2 + usize::from(u16::from_be_bytes([len[0], len[1]])),
                    None => return false,
                },
            }
        }
        false
    }

    #[test]
    fn the_end_marker_scan_answers_as_a_byte_by_byte_scan() {
        let whole = encode(&sample(), image::ImageFormat::Jpeg);
        // An EXIF-like segment whose payload holds an end marker of its own, before the frame.
        let mut with_app1 = whole[..2].to_vec();
        with_app1.extend([0xFF, 0xE1, 0x00, 0x08, 0xAB, 0xFF, 0xD9, 0x00, 0xFF, 0x12]);
        with_app1.extend(&whole[2..]);
        for bytes in [&whole, &with_app1] {
            for cut in 0..=bytes.len() {
                let part = &bytes[..cut];
                assert_eq!(
                    jpeg_reaches_eoi(part),
                    reaches_eoi_byte_by_byte(part),
                    "cut at {cut}"
                );
            }
            // Every byte in turn set to 0xFF, and to 0xD9 after a 0xFF: markers where none were.
            for at in 2..bytes.len() {
                let mut damaged = bytes.clone();
                damaged[at] = 0xFF;
                assert_eq!(
                    jpeg_reaches_eoi(&damaged),
                    reaches_eoi_byte_by_byte(&damaged),
                    "0xFF at {at}"
                );
                if at + 1 < bytes.len() {
                    damaged[at + 1] = 0xD9;
                    assert_eq!(
                        jpeg_reaches_eoi(&damaged),
                        reaches_eoi_byte_by_byte(&damaged),
                        "0xFF 0xD9 at {at}"
                    );
                }
            }
        }
        assert!(jpeg_reaches_eoi(&whole));
        assert!(!jpeg_reaches_eoi(&with_app1[..with_app1.len() - 2]));
    }

    #[test]
    fn jpeg_with_data_after_the_end_marker_is_accepted() {
        let mut bytes = encode(&sample(), image::ImageFormat::Jpeg);
        bytes.extend(std::iter::repeat_n(0xAB, 4096));
        assert_eq!(validate(&bytes, &LIMITS).unwrap().format, ImageFormat::Jpeg);
    }

    #[test]
    fn damaged_png_data_is_corrupt() {
        let mut bytes = encode(&sample(), image::ImageFormat::Png);
        let middle = bytes.len() / 2;
        for b in &mut bytes[middle..middle + 16] {
            *b ^= 0x5A;
        }
        assert_eq!(code(&bytes), "corrupt_image");
    }

    #[test]
    fn decompression_bomb_is_refused_from_the_header() {
        // A 100000 x 100000 RGBA PNG header (40 GB of pixels) in well under a kilobyte.
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // 8-bit RGBA, deflate, no interlace
        let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
        bomb.extend(png_chunk(b"IHDR", &ihdr));
        // zlib header + an empty final stored block: the pixel data would follow.
        bomb.extend(png_chunk(
            b"IDAT",
            &[0x78, 0x01, 0x01, 0x00, 0x00, 0xFF, 0xFF],
        ));
        bomb.extend(png_chunk(b"IEND", &[]));
        assert!(bomb.len() < 100);
        let err = validate(&bomb, &ImageLimits::default()).unwrap_err();
        assert_eq!(
            err,
            ImageRejection::ImageDimensionsTooLarge {
                width: 100_000,
                height: 100_000,
                max: ImageLimits::default().max_pixels
            }
        );
        assert_eq!(err.code(), "image_dimensions_too_large");
    }

    #[test]
    fn dimensions_over_the_pixel_limit() {
        let limits = ImageLimits {
            max_pixels: 64 * 48 - 1,
            ..LIMITS
        };
        let bytes = encode(&sample(), image::ImageFormat::Png);
        assert_eq!(
            validate(&bytes, &limits).unwrap_err().code(),
            "image_dimensions_too_large"
        );
        let limits = ImageLimits {
            max_pixels: 64 * 48,
            ..LIMITS
        };
        validate(&bytes, &limits).unwrap();
    }

    #[test]
    fn decoded_size_is_budgeted_by_bytes_not_pixels() {
        // The same 300 x 300 pixels: 270 000 bytes as 8-bit RGB, 720 000 as 16-bit RGBA (whose
        // PNG of zeros is a few hundred bytes: the shape of a decompression bomb).
        let limits = ImageLimits {
            max_decoded_bytes: 500_000,
            ..LIMITS
        };
        let rgb8 = DynamicImage::ImageRgb8(ImageBuffer::new(300, 300));
        let rgba16 = DynamicImage::ImageRgba16(ImageBuffer::new(300, 300));
        validate(&encode(&rgb8, image::ImageFormat::Png), &limits).unwrap();
        let bomb = encode(&rgba16, image::ImageFormat::Png);
        assert!(bomb.len() < 5_000, "{} bytes", bomb.len());
        let err = validate(&bomb, &limits).unwrap_err();
        assert_eq!(err.code(), "image_dimensions_too_large");
        assert!(
            err.to_string().contains("720000 bytes once decoded"),
            "{err}"
        );
        // The decode holds its bytes of the process budget until the image is dropped.
        let before = decode_budget().in_use();
        let decoded = decode(&bomb, &LIMITS).unwrap();
        assert!(decode_budget().in_use() >= before + 720_000);
        drop(decoded);
    }

    #[test]
    fn alpha_png_is_accepted() {
        let img = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(3, 3, Rgba([1, 2, 3, 4])));
        let bytes = encode(&img, image::ImageFormat::Png);
        assert_eq!(validate(&bytes, &LIMITS).unwrap().format, ImageFormat::Png);
    }
}
