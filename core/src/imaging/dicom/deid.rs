//! De-identification of a DICOM object: the DICOM Basic Application Level Confidentiality
//! Profile (PS3.15 Annex E, Table E.1-1) for the attributes an X-ray, microscopy or photography
//! object carries, with the Retain UIDs and Retain Longitudinal Temporal Information options
//! (the study can be matched to its result and its date kept), and private attributes removed.
//! Pixel data is kept as it is: burned-in annotations are not searched for.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_object::DefaultDicomObject;

/// Emptied (the attribute stays, as type 2 attributes must): action Z of the profile.
const EMPTIED: &[Tag] = &[
    Tag(0x0010, 0x0010), // Patient's Name
    Tag(0x0010, 0x0020), // Patient ID
    Tag(0x0010, 0x0030), // Patient's Birth Date
    Tag(0x0010, 0x0040), // Patient's Sex
    Tag(0x0008, 0x0050), // Accession Number
    Tag(0x0008, 0x0090), // Referring Physician's Name
    Tag(0x0020, 0x0010), // Study ID
];

/// Removed: action X of the profile.
const REMOVED: &[Tag] = &[
    Tag(0x0008, 0x0080), // Institution Name
    Tag(0x0008, 0x0081), // Institution Address
    Tag(0x0008, 0x0092), // Referring Physician's Address
    Tag(0x0008, 0x0094), // Referring Physician's Telephone Numbers
    Tag(0x0008, 0x0096), // Referring Physician Identification Sequence
    Tag(0x0008, 0x1010), // Station Name
    Tag(0x0008, 0x1030), // Study Description
    Tag(0x0008, 0x103E), // Series Description
    Tag(0x0008, 0x1040), // Institutional Department Name
    Tag(0x0008, 0x1048), // Physician(s) of Record
    Tag(0x0008, 0x1050), // Performing Physician's Name
    Tag(0x0008, 0x1060), // Name of Physician(s) Reading Study
    Tag(0x0008, 0x1070), // Operators' Name
    Tag(0x0008, 0x1080), // Admitting Diagnoses Description
    Tag(0x0008, 0x1120), // Referenced Patient Sequence
    Tag(0x0010, 0x0021), // Issuer of Patient ID
    Tag(0x0010, 0x0032), // Patient's Birth Time
    Tag(0x0010, 0x0050), // Patient's Insurance Plan Code Sequence
    Tag(0x0010, 0x1000), // Other Patient IDs
    Tag(0x0010, 0x1001), // Other Patient Names
    Tag(0x0010, 0x1002), // Other Patient IDs Sequence
    Tag(0x0010, 0x1005), // Patient's Birth Name
    Tag(0x0010, 0x1010), // Patient's Age
    Tag(0x0010, 0x1020), // Patient's Size
    Tag(0x0010, 0x1030), // Patient's Weight
    Tag(0x0010, 0x1040), // Patient's Address
    Tag(0x0010, 0x1060), // Patient's Mother's Birth Name
    Tag(0x0010, 0x1080), // Military Rank
    Tag(0x0010, 0x1090), // Medical Record Locator
    Tag(0x0010, 0x2150), // Country of Residence
    Tag(0x0010, 0x2152), // Region of Residence
    Tag(0x0010, 0x2154), // Patient's Telephone Numbers
    Tag(0x0010, 0x2160), // Ethnic Group
    Tag(0x0010, 0x2180), // Occupation
    Tag(0x0010, 0x21B0), // Additional Patient History
    Tag(0x0010, 0x21F0), // Patient's Religious Preference
    Tag(0x0010, 0x4000), // Patient Comments
    Tag(0x0018, 0x1000), // Device Serial Number
    Tag(0x0020, 0x4000), // Image Comments
    Tag(0x0032, 0x1032), // Requesting Physician
    Tag(0x0032, 0x1060), // Requested Procedure Description
    Tag(0x0040, 0x0253), // Performed Procedure Step ID
    Tag(0x0040, 0x0254), // Performed Procedure Step Description
    Tag(0x0040, 0x0275), // Request Attributes Sequence
    Tag(0x0040, 0x1001), // Requested Procedure ID
    Tag(0x0040, 0xA730), // Content Sequence
];

/// What the object says about how it was de-identified (PS3.3 C.7.1.1).
const METHOD: &str = "PS3.15 Basic Profile, Retain UIDs, Retain Dates";

/// De-identifies `object` in place; `pseudonym`, when given, becomes its Patient ID.
pub(super) fn apply(object: &mut DefaultDicomObject, pseudonym: Option<&str>) {
    let private: Vec<Tag> = object.tags().filter(|t| t.group() % 2 == 1).collect();
    for tag in private.into_iter().chain(REMOVED.iter().copied()) {
        object.remove_element(tag);
    }
    for &tag in EMPTIED {
        let vr = object.element_opt(tag).ok().flatten().map(|e| e.vr());
        if let Some(vr) = vr {
            object.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        }
    }
    if let Some(pseudonym) = pseudonym {
        object.put_str(Tag(0x0010, 0x0020), VR::LO, pseudonym);
    }
    object.put_str(Tag(0x0012, 0x0062), VR::CS, "YES"); // Patient Identity Removed
    object.put_str(Tag(0x0012, 0x0063), VR::LO, METHOD); // De-identification Method
}
