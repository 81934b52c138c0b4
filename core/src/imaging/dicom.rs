//! DICOM Part 10 files, as X-ray units and PACS write them: parsed with the dicom-rs crates,
//! checked before any pixel buffer exists, and rendered to 8-bit pixels the way a radiologist's
//! viewer shows them.
//!
//! The pixel pipeline follows PS3.3 C.11 and pydicom's reference functions, to which the tests
//! hold it (within one grey level, on real files):
//! 1. stored values, masked to Bits Stored and sign-extended when Pixel Representation is 1;
//! 2. the Modality LUT: the Modality LUT Sequence, else Rescale Slope/Intercept;
//! 3. the VOI LUT: the first VOI LUT Sequence item, else the first Window Center/Width (with the
//!    VOI LUT Function: LINEAR, LINEAR_EXACT or SIGMOID), else the full stored range;
//! 4. the output range mapped linearly to 0..=255, rounded; MONOCHROME1 inverted.
//!
//! Colour images (RGB, YBR_FULL, and the JPEG codings of YBR that the decoders turn into RGB)
//! become 8-bit RGB. Multi-frame objects are refused: no model screens a series.

use std::fmt;
use std::io::Cursor;

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use image::DynamicImage;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ImageLimits, ImageRejection};

mod deid;
mod pixels;

const FORMAT: &str = "DICOM";

/// The transfer syntaxes whose pixel data MedInform decodes, with their names.
const DECODED_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)"),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
    ),
    (
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Image Compression (Lossless Only)",
    ),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"),
];

/// Syntaxes recognised by name in the refusal, so that a PACS administrator sees what to change.
const REFUSED_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2.2", "Explicit VR Big Endian (retired)"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless)"),
    (
        "1.2.840.10008.1.2.4.201",
        "High-Throughput JPEG 2000 (Lossless Only)",
    ),
    (
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)",
    ),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile"),
    ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless"),
    ("1.2.840.10008.1.2.4.112", "JPEG XL"),
];

/// The transfer syntax UIDs MedInform decodes (negotiated by the DICOM services too).
pub fn decoded_transfer_syntaxes() -> impl Iterator<Item = &'static str> {
    DECODED_SYNTAXES.iter().map(|(uid, _)| *uid)
}

/// What a DICOM file says about where its image belongs: the identifiers a job records, so that
/// a result can be matched to its study in the PACS and the order in the RIS. Patient identity
/// is not among the fields a job shows unless the tenant's `dicom.patient_data` keeps it
/// ([`PatientData`]).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DicomAttributes {
    /// Study Instance UID (0020,000D).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub study_instance_uid: Option<String>,
    /// Series Instance UID (0020,000E).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub series_instance_uid: Option<String>,
    /// SOP Instance UID (0008,0018): the image itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_instance_uid: Option<String>,
    /// SOP Class UID (0008,0016): what kind of object it is (e.g. Digital X-Ray Image Storage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sop_class_uid: Option<String>,
    /// Accession Number (0008,0050): the order in the RIS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accession_number: Option<String>,
    /// Modality (0008,0060): `CR`, `DX`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "DX")]
    pub modality: Option<String>,
    /// Body Part Examined (0018,0015): `CHEST`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "CHEST")]
    pub body_part_examined: Option<String>,
    /// Study Date (0008,0020), as `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-12-01")]
    pub study_date: Option<String>,
    /// Patient ID (0010,0020) as the file has it: kept only where the tenant's
    /// `dicom.patient_data` is `keep`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    /// A keyed hash of the Patient ID (`dicom.patient_data = "pseudonymize"`): the same patient
    /// gives the same pseudonym under the same key, and the ID cannot be read back from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient_pseudonym: Option<String>,
}

impl fmt::Debug for DicomAttributes {
    /// Patient identity is protected health information: never in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DicomAttributes")
            .field("study_instance_uid", &self.study_instance_uid)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .field("modality", &self.modality)
            .field("body_part_examined", &self.body_part_examined)
            .field(
                "patient_id",
                &self.patient_id.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// What happens to patient identity in a DICOM upload, in the job and in the stored object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientData {
    /// The Patient ID is recorded with the job and the stored object is kept as sent.
    Keep,
    /// The job records a keyed hash of the Patient ID; the stored object is de-identified (the
    /// pseudonym stands in its Patient ID).
    Pseudonymize,
    /// Nothing of the patient's identity is kept: the stored object is de-identified.
    #[default]
    Drop,
}

/// A parsed DICOM file whose image can be decoded.
pub struct DicomFile {
    object: DefaultDicomObject,
    transfer_syntax: String,
}

impl fmt::Debug for DicomFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DicomFile")
            .field("transfer_syntax", &self.transfer_syntax)
            .finish_non_exhaustive()
    }
}

/// The image's geometry, read from the header before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub samples_per_pixel: u16,
    pub bits_allocated: u16,
}

impl Geometry {
    /// Bytes of the decoded stored values (every frame).
    pub fn decoded_bytes(&self) -> u64 {
        u64::from(self.width)
            * u64::from(self.height)
            * u64::from(self.frames)
            * u64::from(self.samples_per_pixel)
            * u64::from(self.bits_allocated.div_ceil(8))
    }
}

fn corrupt(detail: impl Into<String>) -> ImageRejection {
    ImageRejection::CorruptImage {
        format: FORMAT,
        detail: detail.into(),
    }
}

/// Whether the bytes are a DICOM Part 10 file (the `DICM` code after the 128-byte preamble).
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM")
}

/// Applies a tenant's [`PatientData`] rule to an upload whose attributes were read by the
/// decode: the attributes the job records, and the bytes to store instead of the upload's when
/// they must be de-identified (`None`: store the upload as it is).
pub fn apply_patient_data(
    bytes: &[u8],
    attributes: &DicomAttributes,
    rule: PatientData,
    pseudonym_key: &str,
) -> Result<(Option<Vec<u8>>, DicomAttributes), ImageRejection> {
    let mut recorded = attributes.clone();
    recorded.patient_id = None;
    let stored = match rule {
        PatientData::Keep => {
            recorded.patient_id = attributes.patient_id.clone();
            None
        }
        PatientData::Pseudonymize => {
            recorded.patient_pseudonym = attributes
                .patient_id
                .as_deref()
                .map(|id| pseudonym(pseudonym_key, id));
            Some(parse(bytes)?.deidentified(recorded.patient_pseudonym.as_deref())?)
        }
        PatientData::Drop => Some(parse(bytes)?.deidentified(None)?),
    };
    Ok((stored, recorded))
}

/// The pseudonym of a Patient ID: HMAC-SHA256 under the configured key, in hex. The same ID
/// gives the same pseudonym under the same key; without the key it cannot be computed or
/// reversed.
pub fn pseudonym(key: &str, patient_id: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(patient_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Parses a Part 10 file (128-byte preamble, `DICM`, file meta group, data set) and checks its
/// transfer syntax.
pub fn parse(bytes: &[u8]) -> Result<DicomFile, ImageRejection> {
    let object = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(Cursor::new(bytes))
        .map_err(|e| match unknown_syntax(bytes) {
            Some(rejection) => rejection,
            None => corrupt(format!("the file could not be parsed: {e}")),
        })?;
    let transfer_syntax = object.meta().transfer_syntax().to_owned();
    check_transfer_syntax(&transfer_syntax)?;
    Ok(DicomFile {
        object,
        transfer_syntax,
    })
}

/// When the data set cannot be parsed because its transfer syntax is one the registry does not
/// know, the refusal names it.
fn unknown_syntax(bytes: &[u8]) -> Option<ImageRejection> {
    let meta =
        dicom_object::meta::FileMetaTable::from_reader(Cursor::new(bytes.get(128..)?)).ok()?;
    check_transfer_syntax(meta.transfer_syntax()).err()
}

fn check_transfer_syntax(uid: &str) -> Result<(), ImageRejection> {
    if DECODED_SYNTAXES.iter().any(|(known, _)| *known == uid) {
        return Ok(());
    }
    let name = REFUSED_SYNTAXES
        .iter()
        .find(|(known, _)| *known == uid)
        .map(|(_, name)| *name);
    Err(ImageRejection::UnsupportedTransferSyntax {
        uid: uid.chars().take(64).collect(),
        name: name.map(str::to_owned),
    })
}

impl DicomFile {
    fn text(&self, tag: dicom_core::Tag) -> Option<String> {
        text_of(&self.object, tag)
    }

    fn uint(&self, tag: dicom_core::Tag) -> Option<u32> {
        self.object.element_opt(tag).ok()??.to_int::<u32>().ok()
    }

    /// The identifiers a job records, with the Patient ID as the file has it.
    pub fn attributes(&self) -> DicomAttributes {
        DicomAttributes {
            study_instance_uid: self.text(tags::STUDY_INSTANCE_UID),
            series_instance_uid: self.text(tags::SERIES_INSTANCE_UID),
            sop_instance_uid: self.text(tags::SOP_INSTANCE_UID),
            sop_class_uid: self.text(tags::SOP_CLASS_UID),
            accession_number: self.text(tags::ACCESSION_NUMBER),
            modality: self.text(tags::MODALITY).map(|m| m.to_ascii_uppercase()),
            body_part_examined: self
                .text(tags::BODY_PART_EXAMINED)
                .map(|b| b.to_ascii_uppercase()),
            study_date: self.text(tags::STUDY_DATE).and_then(|d| iso_date(&d)),
            patient_id: self.text(tags::PATIENT_ID),
            patient_pseudonym: None,
        }
    }

    /// Rows, columns, frames and sample layout, from the header alone.
    fn geometry(&self) -> Result<Geometry, ImageRejection> {
        if self
            .object
            .element_opt(tags::PIXEL_DATA)
            .ok()
            .flatten()
            .is_none()
        {
            return Err(ImageRejection::NoPixelData);
        }
        let required = |tag, name: &str| {
            self.uint(tag)
                .ok_or_else(|| corrupt(format!("{name} is missing or not a number")))
        };
        let geometry = Geometry {
            width: required(tags::COLUMNS, "Columns (0028,0011)")?,
            height: required(tags::ROWS, "Rows (0028,0010)")?,
            frames: self
                .text(tags::NUMBER_OF_FRAMES)
                .map(|n| n.parse::<u32>())
                .transpose()
                .map_err(|_| corrupt("Number of Frames (0028,0008) is not a number"))?
                .unwrap_or(1),
            samples_per_pixel: required(tags::SAMPLES_PER_PIXEL, "Samples per Pixel (0028,0002)")?
                as u16,
            bits_allocated: required(tags::BITS_ALLOCATED, "Bits Allocated (0028,0100)")? as u16,
        };
        if !matches!(geometry.samples_per_pixel, 1 | 3) {
            return Err(ImageRejection::UnsupportedDicomImage {
                detail: format!(
                    "{} samples per pixel (1 or 3 are read)",
                    geometry.samples_per_pixel
                ),
            });
        }
        if !matches!(geometry.bits_allocated, 8 | 16) {
            return Err(ImageRejection::UnsupportedDicomImage {
                detail: format!(
                    "{} bits allocated per sample (8 or 16 are read)",
                    geometry.bits_allocated
                ),
            });
        }
        Ok(geometry)
    }

    /// Checks the compressed stream's own dimensions against Rows and Columns, so that a
    /// fragment declaring a far larger image is refused before a decoder allocates for it; and
    /// refuses 12-bit JPEG Extended (Process 4), which the pure-Rust JPEG decoder does not read.
    fn check_compressed_dimensions(&self, geometry: &Geometry) -> Result<(), ImageRejection> {
        let Ok(element) = self.object.element(tags::PIXEL_DATA) else {
            return Err(ImageRejection::NoPixelData);
        };
        let Value::PixelSequence(sequence) = element.value() else {
            return Ok(()); // native pixel data: its length is checked by the decoder
        };
        let Some(first) = sequence.fragments().first() else {
            return Err(ImageRejection::NoPixelData);
        };
        let declared = if self.transfer_syntax.starts_with("1.2.840.10008.1.2.4.9") {
            j2k_size(first)
        } else if self.transfer_syntax.starts_with("1.2.840.10008.1.2.4.") {
            let frame = jpeg_frame(first);
            if let Some((_, _, precision @ 9..)) = frame
                && self.transfer_syntax != "1.2.840.10008.1.2.4.57"
                && self.transfer_syntax != "1.2.840.10008.1.2.4.70"
            {
                return Err(ImageRejection::UnsupportedTransferSyntax {
                    uid: self.transfer_syntax.clone(),
                    name: Some(format!("JPEG Extended with {precision}-bit samples")),
                });
            }
            frame.map(|(w, h, _)| (w, h))
        } else {
            None // RLE: segments of exactly Rows x Columns
        };
        match declared {
            Some((w, h)) if (w, h) != (geometry.width, geometry.height) => Err(corrupt(format!(
                "the compressed image is {w} x {h} pixels but the header says {} x {}",
                geometry.width, geometry.height
            ))),
            _ => Ok(()),
        }
    }

    /// Decodes the (single) frame and renders it to 8 bits per sample ([`pixels`]).
    pub fn render(&self) -> Result<DynamicImage, ImageRejection> {
        let decoded = self
            .object
            .decode_pixel_data()
            .map_err(|e| corrupt(format!("the pixel data could not be decoded: {e}")))?;
        pixels::render(&self.object, &decoded)
    }

    /// The file with patient identity removed per the DICOM Basic Application Level
    /// Confidentiality Profile (PS3.15 E.1-1), with the Retain UIDs and Retain Longitudinal
    /// Temporal Information options: the study can still be matched, the patient not named.
    /// A pseudonym, when given, stands in the Patient ID.
    pub fn deidentified(&self, pseudonym: Option<&str>) -> Result<Vec<u8>, ImageRejection> {
        let mut object = self.object.clone();
        deid::apply(&mut object, pseudonym);
        let mut out = Vec::new();
        object
            .write_all(&mut out)
            .map_err(|e| corrupt(format!("the de-identified file could not be written: {e}")))?;
        Ok(out)
    }
}

fn text_of(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let text = object.element_opt(tag).ok()??.to_str().ok()?;
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
    (!text.is_empty()).then(|| text.to_owned())
}

/// `YYYYMMDD` as `YYYY-MM-DD`; anything else is left out.
fn iso_date(da: &str) -> Option<String> {
    let ok = da.len() == 8 && da.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| format!("{}-{}-{}", &da[..4], &da[4..6], &da[6..]))
}

/// Width, height and sample precision from a JPEG stream's start-of-frame marker.
fn jpeg_frame(bytes: &[u8]) -> Option<(u32, u32, u8)> {
    let mut i = 2;
    while i + 9 < bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let precision = bytes[i + 4];
            let h = u16::from_be_bytes([bytes[i + 5], bytes[i + 6]]);
            let w = u16::from_be_bytes([bytes[i + 7], bytes[i + 8]]);
            return Some((w.into(), h.into(), precision));
        }
        i += 2 + len;
    }
    None
}

/// Width and height from a JPEG 2000 codestream's SIZ marker (or a JP2 box holding one).
fn j2k_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let at = bytes
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])?;
    let siz = bytes.get(at + 4..at + 4 + 2 + 2 + 16)?;
    let word = |o: usize| u32::from_be_bytes([siz[o], siz[o + 1], siz[o + 2], siz[o + 3]]);
    // Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz.
    let (x, y, x0, y0) = (word(4), word(8), word(12), word(16));
    Some((x.checked_sub(x0)?, y.checked_sub(y0)?))
}

/// Checked, then decoded and rendered: what [`super::decode_with_info`] does with a DICOM file.
pub(super) fn decode(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Result<
    (
        Geometry,
        DynamicImage,
        DicomAttributes,
        super::BudgetPermit<'static>,
    ),
    ImageRejection,
> {
    let file = parse(bytes)?;
    let geometry = file.geometry()?;
    if geometry.frames != 1 {
        return Err(ImageRejection::MultiframeNotSupported {
            frames: geometry.frames,
        });
    }
    let Geometry { width, height, .. } = geometry;
    if width == 0 || height == 0 {
        return Err(corrupt(format!(
            "the header declares {width} x {height} pixels"
        )));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImageRejection::ImageDimensionsTooLarge {
            width,
            height,
            max: limits.max_pixels,
        });
    }
    let decoded_bytes = geometry.decoded_bytes();
    if decoded_bytes > limits.max_decoded_bytes {
        return Err(ImageRejection::DecodedTooLarge {
            width,
            height,
            bytes_per_pixel: geometry.samples_per_pixel * geometry.bits_allocated.div_ceil(8),
            bytes: decoded_bytes,
            max: limits.max_decoded_bytes,
        });
    }
    file.check_compressed_dimensions(&geometry)?;
    // The stored values, their 32-bit working copy and the 8-bit image.
    let working = u64::from(width) * u64::from(height) * u64::from(geometry.samples_per_pixel);
    let permit = super::decode_budget().acquire(decoded_bytes + working * 5);
    let image = file.render()?;
    if (image.width(), image.height()) != (width, height) {
        return Err(corrupt(
            "the decoded image does not have the header's dimensions",
        ));
    }
    Ok((geometry, image, file.attributes(), permit))
}
