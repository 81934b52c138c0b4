//! The pixel pipeline of a DICOM image, as pydicom's reference functions and a viewer apply it
//! (PS3.3 C.11): stored values masked and sign-extended, the Modality LUT (sequence, else
//! rescale), the VOI (first VOI LUT, else first window with its function, else the stored
//! range), mapped to 8 bits; MONOCHROME1 inverted; colour to 8-bit RGB.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_pixeldata::{DecodedPixelData, PhotometricInterpretation, PlanarConfiguration};
use image::{DynamicImage, GrayImage, RgbImage};

use super::{corrupt, text_of};
use crate::imaging::ImageRejection;

/// The decoded stored values of `object` as an 8-bit image: grey through the Modality LUT and
/// the VOI (MONOCHROME1 inverted), colour scaled from Bits Stored (YBR_FULL to RGB).
pub(super) fn render(
    object: &InMemDicomObject,
    pixels: &DecodedPixelData<'_>,
) -> Result<DynamicImage, ImageRejection> {
    let (width, height) = (pixels.columns(), pixels.rows());
    let samples = usize::from(pixels.samples_per_pixel());
    let count = width as usize * height as usize * samples;
    let bits_stored = pixels.bits_stored();
    let signed = matches!(
        pixels.pixel_representation(),
        dicom_pixeldata::PixelRepresentation::Signed
    );
    let values = stored_values(
        pixels.data(),
        pixels.bits_allocated(),
        bits_stored,
        signed,
        count,
    )?;
    match (samples, pixels.photometric_interpretation()) {
        (
            1,
            pi @ (PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2),
        ) => {
            let lut = Grey::from_object(object, bits_stored, signed)?;
            let mut out: Vec<u8> = values.iter().map(|&v| lut.apply(v)).collect();
            if *pi == PhotometricInterpretation::Monochrome1 {
                out.iter_mut().for_each(|v| *v = 255 - *v);
            }
            GrayImage::from_raw(width, height, out)
                .map(DynamicImage::ImageLuma8)
                .ok_or_else(|| corrupt("the pixel data is shorter than the image"))
        }
        (3, pi @ (PhotometricInterpretation::Rgb | PhotometricInterpretation::YbrFull)) => {
            let values = match pixels.planar_configuration() {
                PlanarConfiguration::Standard => values,
                PlanarConfiguration::PixelFirst => interleave(&values),
            };
            let max = f64::from((1u32 << bits_stored.min(16)) - 1);
            let mut out: Vec<u8> = values
                .iter()
                .map(|&v| (f64::from(v) * 255.0 / max).round().clamp(0.0, 255.0) as u8)
                .collect();
            if *pi == PhotometricInterpretation::YbrFull {
                out.chunks_exact_mut(3).for_each(ybr_to_rgb);
            }
            RgbImage::from_raw(width, height, out)
                .map(DynamicImage::ImageRgb8)
                .ok_or_else(|| corrupt("the pixel data is shorter than the image"))
        }
        (_, other) => Err(ImageRejection::UnsupportedDicomImage {
            detail: format!("photometric interpretation {other} with {samples} samples per pixel"),
        }),
    }
}

/// The stored values: samples of `bits_allocated` bits (native byte order, as the decoders
/// leave them), masked to `bits_stored` and sign-extended when signed.
fn stored_values(
    data: &[u8],
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
    count: usize,
) -> Result<Vec<i32>, ImageRejection> {
    let bits_stored = u32::from(bits_stored.clamp(1, bits_allocated));
    let mask = (1u32 << bits_stored) - 1;
    let extend = |raw: u32| -> i32 {
        let v = raw & mask;
        if signed && v & (1 << (bits_stored - 1)) != 0 {
            (v as i32) - (1i32 << bits_stored)
        } else {
            v as i32
        }
    };
    let short = || corrupt("the pixel data is shorter than Rows x Columns x Samples per Pixel");
    Ok(match bits_allocated {
        8 => data
            .get(..count)
            .ok_or_else(short)?
            .iter()
            .map(|&b| extend(b.into()))
            .collect(),
        _ => data
            .get(..count * 2)
            .ok_or_else(short)?
            .chunks_exact(2)
            .map(|b| extend(u16::from_ne_bytes([b[0], b[1]]).into()))
            .collect(),
    })
}

/// `RRR...GGG...BBB...` as `RGBRGB...`.
fn interleave(planes: &[i32]) -> Vec<i32> {
    let n = planes.len() / 3;
    (0..n)
        .flat_map(|i| [planes[i], planes[n + i], planes[2 * n + i]])
        .collect()
}

/// YBR_FULL to RGB, as pydicom's `convert_color_space` (PS3.3 C.7.6.3.1.2).
fn ybr_to_rgb(pixel: &mut [u8]) {
    let y = f64::from(pixel[0]);
    let cb = f64::from(pixel[1]) - 128.0;
    let cr = f64::from(pixel[2]) - 128.0;
    let r = y + 1.402 * cr;
    let g = y - (0.114 * 1.772 / 0.587) * cb - (0.299 * 1.402 / 0.587) * cr;
    let b = y + 1.772 * cb;
    for (out, v) in pixel.iter_mut().zip([r, g, b]) {
        *out = (v + 0.5).floor().clamp(0.0, 255.0) as u8;
    }
}

/// A lookup table: its descriptor (entries, first stored value mapped, bits per entry) and data.
#[derive(Debug, Clone)]
struct Lut {
    first_mapped: i32,
    data: Vec<u16>,
    bits: u32,
}

impl Lut {
    fn from_item(item: &InMemDicomObject) -> Option<Self> {
        let descriptor = item
            .element_opt(tags::LUT_DESCRIPTOR)
            .ok()??
            .to_multi_int::<i32>()
            .ok()?;
        let [entries, first_mapped, bits] = descriptor[..] else {
            return None;
        };
        // 0 entries means 2^16; the first value mapped is US or SS depending on the stored values.
        let entries = if entries == 0 {
            65536
        } else {
            entries as u16 as usize
        };
        let data_element = item.element_opt(tags::LUT_DATA).ok()??;
        let mut data: Vec<u16> = match data_element.to_multi_int::<u16>() {
            Ok(values) => values,
            Err(_) => data_element
                .to_bytes()
                .ok()?
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect(),
        };
        if data.is_empty() {
            return None;
        }
        data.truncate(entries);
        Some(Self {
            first_mapped,
            data,
            bits: u32::try_from(bits).ok().filter(|b| (1..=16).contains(b))?,
        })
    }

    fn lookup(&self, v: f64) -> f64 {
        let index = (v - f64::from(self.first_mapped)).clamp(0.0, (self.data.len() - 1) as f64);
        f64::from(self.data[index as usize])
    }

    fn max_output(&self) -> f64 {
        f64::from((1u32 << self.bits) - 1)
    }
}

/// The first item of a sequence.
fn first_item(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<&InMemDicomObject> {
    object.element_opt(tag).ok()??.items()?.first()
}

/// The grey-scale pipeline of one image, precomputed: Modality LUT, then VOI, then 8 bits.
struct Grey {
    modality: Modality,
    voi: Voi,
    /// The VOI's output range, mapped to 0..=255.
    out_min: f64,
    out_max: f64,
}

enum Modality {
    Lut(Lut),
    Rescale { slope: f64, intercept: f64 },
}

enum Voi {
    Lut(Lut),
    Linear {
        center: f64,
        width: f64,
        exact: bool,
    },
    Sigmoid {
        center: f64,
        width: f64,
    },
    None,
}

impl Grey {
    fn from_object(
        object: &InMemDicomObject,
        bits_stored: u16,
        signed: bool,
    ) -> Result<Self, ImageRejection> {
        let float = |tag| -> Option<f64> {
            object
                .element_opt(tag)
                .ok()??
                .to_multi_float64()
                .ok()?
                .first()
                .copied()
        };
        let modality_lut = first_item(object, tags::MODALITY_LUT_SEQUENCE).and_then(Lut::from_item);
        let rescale = float(tags::RESCALE_SLOPE).zip(float(tags::RESCALE_INTERCEPT));

        // The stored range, through the Modality LUT: the VOI's input range.
        let bits = u32::from(bits_stored.clamp(1, 16));
        let (mut y_min, mut y_max) = match (&modality_lut, signed) {
            (Some(lut), _) => (0.0, lut.max_output()),
            (None, false) => (0.0, f64::from((1u32 << bits) - 1)),
            (None, true) => (
                -f64::from(1u32 << (bits - 1)),
                f64::from((1u32 << (bits - 1)) - 1),
            ),
        };
        if let Some((slope, intercept)) = rescale {
            y_min = y_min * slope + intercept;
            y_max = y_max * slope + intercept;
        }
        let modality = match modality_lut {
            Some(lut) => Modality::Lut(lut),
            None => {
                let (slope, intercept) = rescale.unwrap_or((1.0, 0.0));
                Modality::Rescale { slope, intercept }
            }
        };

        let window = float(tags::WINDOW_CENTER).zip(float(tags::WINDOW_WIDTH));
        let function = text_of(object, tags::VOILUT_FUNCTION)
            .unwrap_or_else(|| "LINEAR".to_owned())
            .to_ascii_uppercase();
        let voi_lut = first_item(object, tags::VOILUT_SEQUENCE).and_then(Lut::from_item);
        let invalid = |why: String| corrupt(format!("the VOI window is invalid: {why}"));
        let (voi, out_min, out_max) = match (voi_lut, window) {
            (Some(lut), _) => {
                let max = lut.max_output();
                (Voi::Lut(lut), 0.0, max)
            }
            (None, Some((center, width))) => {
                let voi = match function.as_str() {
                    "LINEAR" if width >= 1.0 => Voi::Linear {
                        center,
                        width,
                        exact: false,
                    },
                    "LINEAR_EXACT" if width > 0.0 => Voi::Linear {
                        center,
                        width,
                        exact: true,
                    },
                    "SIGMOID" if width > 0.0 => Voi::Sigmoid { center, width },
                    "LINEAR" | "LINEAR_EXACT" | "SIGMOID" => {
                        return Err(invalid(format!("width {width} with {function}")));
                    }
                    other => return Err(invalid(format!("unknown VOI LUT Function {other:?}"))),
                };
                (voi, y_min, y_max)
            }
            (None, None) => (Voi::None, y_min, y_max),
        };
        Ok(Self {
            modality,
            voi,
            out_min,
            out_max,
        })
    }

    fn apply(&self, stored: i32) -> u8 {
        let v = match &self.modality {
            Modality::Lut(lut) => lut.lookup(f64::from(stored)),
            Modality::Rescale { slope, intercept } => f64::from(stored) * slope + intercept,
        };
        let (lo, hi) = (self.out_min, self.out_max);
        let v = match &self.voi {
            // pydicom indexes the VOI LUT with the Modality LUT's output as integers.
            Voi::Lut(lut) => lut.lookup(v.trunc()),
            Voi::Linear {
                center,
                width,
                exact,
            } => {
                // PS3.3 C.11.2.1.2.1 (LINEAR) and C.11.2.1.3.2 (LINEAR_EXACT).
                let (c, w) = if *exact {
                    (*center, *width)
                } else {
                    (center - 0.5, width - 1.0)
                };
                if v <= c - w / 2.0 {
                    lo
                } else if v > c + w / 2.0 {
                    hi
                } else {
                    ((v - c) / w + 0.5) * (hi - lo) + lo
                }
            }
            Voi::Sigmoid { center, width } => {
                (hi - lo) / (1.0 + (-4.0 * (v - center) / width).exp()) + lo
            }
            Voi::None => v,
        };
        if hi == lo {
            return 0;
        }
        ((v - lo) / (hi - lo) * 255.0).round().clamp(0.0, 255.0) as u8
    }
}
