//! What a client says about its images, parsed once into values known to be valid, whichever
//! path it comes by: a job's form, a batch's JSON or form, an image's file name. A value that
//! does not parse is refused with a code; nothing is trimmed to fit or replaced in silence.

use chrono::{DateTime, Utc};

use crate::{ApiError, ErrorCode};

/// Longest client reference, site, campaign or operator, in characters.
pub const MAX_TEXT_CHARS: usize = 200;
/// Most tags on a job or batch.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 50;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, message)
}

/// Trimmed text of at most `max` printable characters; `None` when empty.
fn printable(value: &str, max: usize) -> Result<Option<String>, String> {
    let value = value.trim();
    if value.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    if value.chars().count() > max {
        return Err(format!("is longer than {max} characters"));
    }
    Ok(Some(value.to_owned()).filter(|v| !v.is_empty()))
}

/// A patient or sample reference: up to [`MAX_TEXT_CHARS`] printable characters, echoed back
/// and never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientReference(String);

impl ClientReference {
    /// `None` for an empty value.
    pub fn parse(value: &str) -> Result<Option<Self>, ApiError> {
        printable(value, MAX_TEXT_CHARS)
            .map(|v| v.map(Self))
            .map_err(|why| {
                ApiError::new(
                    ErrorCode::InvalidClientReference,
                    format!("`client_reference` {why}."),
                )
            })
    }

    /// An image's file name as its reference (a batch image sent without one).
    pub fn from_file_name(name: &str) -> Result<Option<Self>, ApiError> {
        printable(name, MAX_TEXT_CHARS)
            .map(|v| v.map(Self))
            .map_err(|why| {
                ApiError::new(
                    ErrorCode::InvalidClientReference,
                    format!(
                        "The file name, which becomes the image's client_reference, {why}; \
                         rename the file or send a client_reference before the image."
                    ),
                )
            })
    }
}

impl From<ClientReference> for String {
    fn from(value: ClientReference) -> Self {
        value.0
    }
}

/// A short free text: a site, campaign or operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortText(String);

impl ShortText {
    /// `None` for an empty value; `field` names it in the error.
    pub fn parse(field: &str, value: &str) -> Result<Option<Self>, ApiError> {
        printable(value, MAX_TEXT_CHARS)
            .map(|v| v.map(Self))
            .map_err(|why| invalid(format!("`{field}` {why}.")))
    }
}

impl From<ShortText> for String {
    fn from(value: ShortText) -> Self {
        value.0
    }
}

/// Tags: at most [`MAX_TAGS`], each of 1 to [`MAX_TAG_CHARS`] printable characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tags(Vec<String>);

impl Tags {
    /// Adds a form field's tags: a comma-separated list (the field may be repeated).
    pub fn add_list(&mut self, value: &str) -> Result<(), ApiError> {
        for tag in value.split(',').filter(|t| !t.trim().is_empty()) {
            self.add(tag)?;
        }
        Ok(())
    }

    /// Adds one tag; an empty one is refused (a JSON list names each tag).
    pub fn add(&mut self, tag: &str) -> Result<(), ApiError> {
        let tag = printable(tag, MAX_TAG_CHARS)
            .map_err(|why| invalid(format!("A tag {why}.")))?
            .ok_or_else(|| invalid("A tag is empty."))?;
        if self.0.len() == MAX_TAGS {
            return Err(invalid(format!("At most {MAX_TAGS} tags are accepted.")));
        }
        self.0.push(tag);
        Ok(())
    }

    /// Tags from a JSON list.
    pub fn from_list(tags: &[String]) -> Result<Self, ApiError> {
        let mut out = Self::default();
        for tag in tags {
            out.add(tag)?;
        }
        Ok(out)
    }
}

impl From<Tags> for Vec<String> {
    fn from(value: Tags) -> Self {
        value.0
    }
}

/// A deadline: an RFC 3339 time in the future; `None` for an empty value.
pub fn deadline(value: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let deadline = DateTime::parse_from_rfc3339(value)
        .map_err(|_| {
            invalid(format!(
                "`deadline` must be an RFC 3339 time such as 2026-12-01T18:00:00Z, got {value:?}."
            ))
        })?
        .with_timezone(&Utc);
    if deadline <= Utc::now() {
        return Err(invalid(
            "`deadline` is in the past: the job would never run.",
        ));
    }
    Ok(Some(deadline))
}

/// The schemas of these values, for the OpenAPI document (`#[schema(schema_with = ...)]`):
/// patterns that match exactly what the parsers above accept, built from the same constants.
/// Whitespace around a value is trimmed before it is checked, so the patterns allow any amount of
/// it (control characters such as tab and newline included) around a value that, trimmed, has no
/// control character and is short enough.
pub mod schema {
    use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, SchemaType, Type};

    use super::*;

    /// Control characters (`char::is_control`): C0, DEL and C1.
    const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";
    /// What `str::trim` removes (`char::is_whitespace`).
    const SPACE: &str =
        r"\t\n\u000b\u000c\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
    /// Whitespace that is not a control character: all a blank tag between commas may hold.
    const PLAIN_SPACE: &str = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

    /// Values whose trimmed text is matched by `body`, provided that `body` only restricts the
    /// characters and the length of what it matches (a trimmed value is a part of the value
    /// between leading and trailing whitespace, so the pattern matches exactly those values).
    pub(crate) fn trimmed_pattern(body: &str) -> String {
        format!("^[{SPACE}]*{body}[{SPACE}]*$")
    }

    /// Text that [`printable`] accepts with `max`: once trimmed, at most `max` characters and no
    /// control character.
    pub(crate) fn printable_pattern(max: usize) -> String {
        trimmed_pattern(&format!("[^{CONTROL}]{{0,{max}}}"))
    }

    /// A comma-separated list that [`Tags::add_list`] accepts, once the form field is trimmed
    /// and checked for control characters: blank items, and at most [`MAX_TAGS`] tags that are
    /// 1 to [`MAX_TAG_CHARS`] characters once trimmed.
    pub(crate) fn tag_list_pattern() -> String {
        let blank = format!("[{PLAIN_SPACE}]*");
        // Trimmed, a tag starts and ends with a character that is neither whitespace nor a
        // control character.
        let edge = format!("[^,{CONTROL}{SPACE}]");
        let tag = format!(
            "{blank}{edge}(?:[^,{CONTROL}]{{0,{}}}{edge})?{blank}",
            MAX_TAG_CHARS - 2
        );
        let list = format!(
            "(?:{blank},)*(?:{tag}(?:,{blank})*(?:,{tag}(?:,{blank})*){{0,{}}}|{blank})",
            MAX_TAGS - 1
        );
        trimmed_pattern(&list)
    }

    /// A tag that [`Tags::add`] accepts: 1 to [`MAX_TAG_CHARS`] characters once trimmed, and no
    /// control character.
    pub(crate) fn tag_pattern() -> String {
        let edge = format!("[^{CONTROL}{SPACE}]");
        let middle = format!("[^{CONTROL}]{{0,{}}}", MAX_TAG_CHARS - 2);
        trimmed_pattern(&format!("{edge}(?:{middle}{edge})?"))
    }

    /// A [`ShortText`] or [`ClientReference`] in a form: empty or left out when there is none.
    pub fn form_text() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(printable_pattern(MAX_TEXT_CHARS)))
            .build()
    }

    /// A [`ShortText`] or [`ClientReference`] in JSON, where `null` is no value.
    pub fn json_text() -> Object {
        ObjectBuilder::new()
            .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
            .pattern(Some(printable_pattern(MAX_TEXT_CHARS)))
            .build()
    }

    /// The `tags` of JSON: at most [`MAX_TAGS`] tags ([`Tags::from_list`]).
    pub fn json_tags() -> Array {
        let tag = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(tag_pattern()));
        ArrayBuilder::new()
            .items(tag)
            .max_items(Some(MAX_TAGS))
            .build()
    }

    /// The `tags` of a form: a comma-separated list ([`Tags::add_list`]).
    pub fn form_tags() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(tag_list_pattern()))
            .build()
    }

    /// The `priority` form field: a lane.
    pub fn form_priority() -> Object {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["interactive", "bulk"]))
            .build()
    }
}

/// A text form field's bytes as text: invalid UTF-8 is refused, never replaced.
pub fn utf8(field: &str, bytes: &[u8]) -> Result<String, ApiError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| invalid(format!("The `{field}` field is not valid UTF-8 text.")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
        result.unwrap_err().code().as_str()
    }

    #[test]
    fn references_are_printable_bounded_and_trimmed() {
        let r = ClientReference::parse("  camp7-slide12 ").unwrap().unwrap();
        assert_eq!(String::from(r), "camp7-slide12");
        assert_eq!(ClientReference::parse("   ").unwrap(), None);
        assert_eq!(
            code(ClientReference::parse("a\u{7}b")),
            "invalid_client_reference"
        );
        assert_eq!(
            code(ClientReference::parse(&"x".repeat(201))),
            "invalid_client_reference"
        );
        ClientReference::parse(&"é".repeat(200)).unwrap();
        // A file name gets the same rules, and says where the reference came from.
        let long = format!("\t{}.png", "x".repeat(300));
        let err = ClientReference::from_file_name(&long).unwrap_err();
        assert!(err.to_string().contains("file name"), "{err}");
    }

    #[test]
    fn tags_are_counted_checked_and_never_empty() {
        let mut tags = Tags::default();
        tags.add_list("follow-up, hiv+ ,").unwrap();
        tags.add_list("night-shift").unwrap();
        assert_eq!(
            Vec::<String>::from(tags.clone()),
            ["follow-up", "hiv+", "night-shift"]
        );
        assert_eq!(code(Tags::from_list(&["".into()])), "invalid_field");
        assert_eq!(code(Tags::from_list(&["a\nb".into()])), "invalid_field");
        assert_eq!(code(Tags::from_list(&["x".repeat(51)])), "invalid_field");
        let many: Vec<String> = (0..21).map(|i| i.to_string()).collect();
        assert_eq!(code(Tags::from_list(&many)), "invalid_field");
        Tags::from_list(&many[..20]).unwrap();
    }

    #[test]
    fn text_fields_refuse_control_characters_and_invalid_utf8() {
        assert_eq!(code(ShortText::parse("site", "Camp\r7")), "invalid_field");
        assert_eq!(
            ShortText::parse("site", " Camp 7 ")
                .unwrap()
                .map(String::from),
            Some("Camp 7".to_owned())
        );
        assert_eq!(code(utf8("site", b"Camp \xff")), "invalid_field");
        assert_eq!(utf8("site", "Kisumu".as_bytes()).unwrap(), "Kisumu");
    }

    /// The schema patterns accept exactly what the parsers accept.
    mod patterns {
        use regex::Regex;

        use super::super::*;

        fn assert_agrees(pattern: &str, values: &[String], accepts: impl Fn(&str) -> bool) {
            let regex = Regex::new(pattern).unwrap();
            for value in values {
                assert_eq!(
                    regex.is_match(value),
                    accepts(value),
                    "pattern and parser disagree on {value:?}"
                );
            }
        }

        fn texts() -> Vec<String> {
            let x = "x";
            let mut values: Vec<String> = [
                "",
                " ",
                "camp 7",
                "\tcamp 7\n",
                " \u{85}camp\u{3000}",
                "camp\t7",
                "a\u{7f}",
                "\u{9f}",
                "\u{a0}",
                "é",
                "\u{1f600}",
                "\r\n",
                "\u{0}",
                "a,b",
                " , ",
            ]
            .map(String::from)
            .to_vec();
            for n in [49, 50, 51, 199, 200, 201] {
                values.push(x.repeat(n));
                values.push(format!(" {}\t", x.repeat(n)));
                values.push(format!("\n{}", "é".repeat(n)));
            }
            values
        }

        #[test]
        fn short_texts() {
            assert_agrees(&schema::printable_pattern(MAX_TEXT_CHARS), &texts(), |v| {
                ShortText::parse("site", v).is_ok()
            });
        }

        #[test]
        fn tags_of_json() {
            assert_agrees(&schema::tag_pattern(), &texts(), |v| {
                Tags::from_list(&[v.to_owned()]).is_ok()
            });
        }

        #[test]
        fn tag_lists_of_a_form() {
            let mut values = texts();
            values.extend(
                [
                    "follow-up, hiv+ ,",
                    ",,",
                    "a,,b",
                    " a , b ",
                    "a,\tb",
                    "\ta,b\n",
                    ",a,",
                    "a, ,b",
                    "a,\u{a0},b",
                ]
                .map(String::from),
            );
            for n in [19, 20, 21] {
                let tags: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
                values.push(tags.join(","));
                values.push(format!("{}, ,", tags.join(" , ")));
            }
            values.push(format!("a,{},b", "x".repeat(50)));
            values.push(format!("a,{},b", "x".repeat(51)));
            values.push(format!("a, {} ,b", "x".repeat(50)));
            // As a form field is read: trimmed, and refused with a control character.
            assert_agrees(&schema::tag_list_pattern(), &values, |v| {
                let v = v.trim();
                !v.chars().any(char::is_control) && Tags::default().add_list(v).is_ok()
            });
        }
    }
}
