//! DIMSE messages of the C-STORE service (PS3.7): a request put back together from its P-DATA
//! fragments, the command fields the service reads, the responses it writes, and the Part 10
//! file that a received data set becomes.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{PDataValue, PDataValueType};

/// Command Field (0000,0100) of a C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
/// Command Field (0000,0100) of a C-ECHO-RQ.
pub const C_ECHO_RQ: u16 = 0x0030;
/// A response's Command Field is its request's with this bit set.
const RESPONSE_BIT: u16 = 0x8000;
/// Command Data Set Type (0000,0800): no data set follows the command.
const NO_DATA_SET: u16 = 0x0101;

/// Status (0000,0900): success.
pub const SUCCESS: u16 = 0x0000;
/// Status: the operation is not one the service provides (PS3.7 C.5.4).
pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;

/// The largest command set taken: a C-STORE-RQ is a few hundred bytes.
const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Error Comment (0000,0902) is an LO: at most 64 characters.
const MAX_ERROR_COMMENT_CHARS: usize = 64;

/// What the service reads of a request's command set.
#[derive(Debug, Clone)]
pub struct Command {
    /// Command Field (0000,0100).
    pub field: u16,
    /// Message ID (0000,0110).
    pub message_id: u16,
    /// Affected SOP Class UID (0000,0002); empty when the command has none.
    pub sop_class_uid: String,
    /// Affected SOP Instance UID (0000,1000); empty when the command has none.
    pub sop_instance_uid: String,
    /// Whether a data set follows (Command Data Set Type other than 0101H).
    pub has_data_set: bool,
}

impl Command {
    /// Reads a command set (always Implicit VR Little Endian, PS3.7 6.3.1).
    fn read(bytes: &[u8]) -> Result<Self, String> {
        let object =
            InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|e| format!("an unreadable command set: {e}"))?;
        let number = |tag, name: &str| {
            object
                .element(tag)
                .ok()
                .and_then(|e| e.to_int::<u16>().ok())
                .ok_or_else(|| format!("a command set without {name}"))
        };
        let uid = |tag| {
            object
                .element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|v| v.trim_end_matches(['\0', ' ']).to_owned())
                .unwrap_or_default()
        };
        Ok(Self {
            field: number(tags::COMMAND_FIELD, "a Command Field")?,
            message_id: number(tags::MESSAGE_ID, "a Message ID")?,
            sop_class_uid: uid(tags::AFFECTED_SOP_CLASS_UID),
            sop_instance_uid: uid(tags::AFFECTED_SOP_INSTANCE_UID),
            has_data_set: number(tags::COMMAND_DATA_SET_TYPE, "a Command Data Set Type")?
                != NO_DATA_SET,
        })
    }
}

/// A whole request.
#[derive(Debug)]
pub struct Request {
    pub presentation_context_id: u8,
    pub command: Command,
    pub data_set: DataSet,
}

/// The data set of a request.
#[derive(Debug)]
pub enum DataSet {
    /// The command has none (C-ECHO).
    None,
    /// Its bytes, in the presentation context's transfer syntax.
    Received(Vec<u8>),
    /// Over the limit: its length in bytes, not kept.
    TooLarge(usize),
}

/// A request as its fragments (PDVs) arrive: the command set, then its data set if it has one.
/// Data beyond `max_data_bytes` is read and dropped, so that the request can still be answered.
#[derive(Debug)]
pub struct Incoming {
    max_data_bytes: usize,
    presentation_context_id: Option<u8>,
    command_bytes: Vec<u8>,
    command: Option<Command>,
    data: Vec<u8>,
    data_len: usize,
}

impl Incoming {
    pub fn new(max_data_bytes: usize) -> Self {
        Self {
            max_data_bytes,
            presentation_context_id: None,
            command_bytes: Vec::new(),
            command: None,
            data: Vec::new(),
            data_len: 0,
        }
    }

    /// Whether no fragment of a request has arrived (the association is between operations).
    pub fn is_idle(&self) -> bool {
        self.presentation_context_id.is_none()
    }

    /// Takes one fragment: the whole request once its last fragment is in. An error is a
    /// protocol violation (the association is aborted).
    pub fn push(&mut self, fragment: PDataValue) -> Result<Option<Request>, String> {
        let context = *self
            .presentation_context_id
            .get_or_insert(fragment.presentation_context_id);
        if fragment.presentation_context_id != context {
            return Err("a request's fragments on two presentation contexts".to_owned());
        }
        match fragment.value_type {
            PDataValueType::Command => {
                if self.command.is_some() {
                    return Err("a command fragment after a whole command set".to_owned());
                }
                if self.command_bytes.len() + fragment.data.len() > MAX_COMMAND_BYTES {
                    return Err(format!("a command set over {MAX_COMMAND_BYTES} bytes"));
                }
                self.command_bytes.extend_from_slice(&fragment.data);
                if !fragment.is_last {
                    return Ok(None);
                }
                let command = Command::read(&self.command_bytes)?;
                if command.has_data_set {
                    self.command = Some(command);
                    Ok(None)
                } else {
                    Ok(Some(self.finish(command, DataSet::None)))
                }
            }
            PDataValueType::Data => {
                let Some(command) = self.command.take() else {
                    return Err("a data fragment before its command set".to_owned());
                };
                self.data_len += fragment.data.len();
                if self.data_len <= self.max_data_bytes {
                    self.data.extend_from_slice(&fragment.data);
                } else {
                    self.data = Vec::new();
                }
                if !fragment.is_last {
                    self.command = Some(command);
                    return Ok(None);
                }
                let data_set = if self.data_len <= self.max_data_bytes {
                    DataSet::Received(std::mem::take(&mut self.data))
                } else {
                    DataSet::TooLarge(self.data_len)
                };
                Ok(Some(self.finish(command, data_set)))
            }
        }
    }

    /// The request, and this ready for the next one.
    fn finish(&mut self, command: Command, data_set: DataSet) -> Request {
        let presentation_context_id = self.presentation_context_id.take().unwrap_or_default();
        *self = Self::new(self.max_data_bytes);
        Request {
            presentation_context_id,
            command,
            data_set,
        }
    }
}

/// The response to `command` with `status`, and for a failure the reason in words (Error
/// Comment), as the one PDV of a P-DATA-TF.
pub fn response(
    presentation_context_id: u8,
    command: &Command,
    status: u16,
    comment: Option<&str>,
) -> anyhow::Result<PDataValue> {
    let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
    let mut elements = vec![
        us(tags::COMMAND_FIELD, command.field | RESPONSE_BIT),
        us(tags::MESSAGE_ID_BEING_RESPONDED_TO, command.message_id),
        us(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        us(tags::STATUS, status),
    ];
    let mut text = |tag, vr, value: &str| {
        if !value.is_empty() {
            elements.push(DataElement::new(tag, vr, PrimitiveValue::from(value)));
        }
    };
    text(tags::AFFECTED_SOP_CLASS_UID, VR::UI, &command.sop_class_uid);
    text(
        tags::AFFECTED_SOP_INSTANCE_UID,
        VR::UI,
        &command.sop_instance_uid,
    );
    if let Some(comment) = comment {
        text(tags::ERROR_COMMENT, VR::LO, &error_comment(comment));
    }
    let mut data = Vec::new();
    InMemDicomObject::command_from_element_iter(elements)
        .write_dataset_with_ts(&mut data, &IMPLICIT_VR_LITTLE_ENDIAN.erased())?;
    Ok(PDataValue {
        presentation_context_id,
        value_type: PDataValueType::Command,
        is_last: true,
        data,
    })
}

/// `message` as an Error Comment: printable ASCII without backslashes (LO), shortened to 64
/// characters.
fn error_comment(message: &str) -> String {
    let printable: String = message
        .chars()
        .map(|c| match c {
            '\\' => '/',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => ' ',
        })
        .collect();
    let printable = printable.trim();
    if printable.len() <= MAX_ERROR_COMMENT_CHARS {
        return printable.to_owned();
    }
    format!("{}...", printable[..MAX_ERROR_COMMENT_CHARS - 3].trim_end())
}

/// The Part 10 file of a received data set: preamble, `DICM`, and the file meta group from
/// the C-STORE-RQ and its presentation context, then the data set as it arrived.
pub fn part10(
    command: &Command,
    transfer_syntax: &str,
    sending_ae_title: &str,
    receiving_ae_title: &str,
    data_set: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(command.sop_class_uid.as_str())
        .media_storage_sop_instance_uid(command.sop_instance_uid.as_str())
        .transfer_syntax(transfer_syntax.trim_end_matches('\0'))
        .sending_application_entity_title(sending_ae_title)
        .receiving_application_entity_title(receiving_ae_title)
        .build()?;
    let mut file = Vec::with_capacity(132 + 256 + data_set.len());
    file.extend_from_slice(&[0; 128]);
    file.extend_from_slice(b"DICM");
    meta.write(&mut file)?;
    file.extend_from_slice(data_set);
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_set(field: u16, data_set_type: u16) -> Vec<u8> {
        let us = |tag, value: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(value));
        let mut bytes = Vec::new();
        InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1"),
            ),
            us(tags::COMMAND_FIELD, field),
            us(tags::MESSAGE_ID, 7),
            us(tags::COMMAND_DATA_SET_TYPE, data_set_type),
            DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4"),
            ),
        ])
        .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
        bytes
    }

    fn fragment(kind: PDataValueType, is_last: bool, data: &[u8]) -> PDataValue {
        PDataValue {
            presentation_context_id: 3,
            value_type: kind,
            is_last,
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_request_is_put_back_together_from_its_fragments() {
        let command = command_set(C_STORE_RQ, 0x0000);
        let (head, tail) = command.split_at(10);
        let mut incoming = Incoming::new(1024);
        assert!(incoming.is_idle());
        for part in [
            fragment(PDataValueType::Command, false, head),
            fragment(PDataValueType::Command, true, tail),
            fragment(PDataValueType::Data, false, b"abc"),
        ] {
            assert!(incoming.push(part).unwrap().is_none());
            assert!(!incoming.is_idle());
        }
        let request = incoming
            .push(fragment(PDataValueType::Data, true, b"def"))
            .unwrap()
            .unwrap();
        assert!(incoming.is_idle());
        assert_eq!(request.presentation_context_id, 3);
        assert_eq!(request.command.field, C_STORE_RQ);
        assert_eq!(request.command.message_id, 7);
        assert_eq!(request.command.sop_instance_uid, "1.2.3.4");
        assert!(matches!(request.data_set, DataSet::Received(ref d) if d == b"abcdef"));
    }

    #[test]
    fn an_echo_has_no_data_set_and_an_oversized_data_set_is_dropped() {
        let mut incoming = Incoming::new(4);
        let echo = incoming
            .push(fragment(
                PDataValueType::Command,
                true,
                &command_set(C_ECHO_RQ, NO_DATA_SET),
            ))
            .unwrap()
            .unwrap();
        assert!(matches!(echo.data_set, DataSet::None));

        let store = command_set(C_STORE_RQ, 0x0000);
        assert!(
            incoming
                .push(fragment(PDataValueType::Command, true, &store))
                .unwrap()
                .is_none()
        );
        assert!(
            incoming
                .push(fragment(PDataValueType::Data, false, b"abc"))
                .unwrap()
                .is_none()
        );
        let request = incoming
            .push(fragment(PDataValueType::Data, true, b"def"))
            .unwrap()
            .unwrap();
        assert!(matches!(request.data_set, DataSet::TooLarge(6)));
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut incoming = Incoming::new(1024);
        assert!(
            incoming
                .push(fragment(PDataValueType::Data, true, b"x"))
                .is_err()
        );
        let mut incoming = Incoming::new(1024);
        assert!(
            incoming
                .push(fragment(PDataValueType::Command, true, b"not a command"))
                .is_err()
        );
    }

    #[test]
    fn an_error_comment_is_a_short_lo() {
        assert_eq!(error_comment("Not DICOM\\really"), "Not DICOM/really");
        let long = error_comment(&"word ".repeat(40));
        assert!(
            long.len() <= MAX_ERROR_COMMENT_CHARS && long.ends_with("..."),
            "{long}"
        );
        assert_eq!(error_comment("über"), "ber");
    }
}
