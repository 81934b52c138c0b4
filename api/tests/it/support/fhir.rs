//! Validates FHIR as a receiving system would: with the R4B models of the PyPI package
//! `fhir.resources` (infra/requirements.txt), run by the venv's Python, not with anything of the
//! service's own.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Reads a Bundle on stdin, validates it and then each entry's resource with its own model, and
/// prints the resource types in order.
const VALIDATE_BUNDLE: &str = r#"
import json, sys
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

bundle = json.load(sys.stdin)
Bundle.model_validate(bundle)
types = []
for entry in bundle["entry"]:
    resource = entry["resource"]
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    types.append(resource["resourceType"])
print(json.dumps(types))
"#;

/// The resource types of `bundle`'s entries, in order, once the Bundle and every resource in it
/// validate as FHIR R4B; what the validator said otherwise.
pub fn validate_r4_bundle(bundle: &Value) -> Result<Vec<String>, String> {
    let mut child = Command::new(super::python())
        .args(["-c", VALIDATE_BUNDLE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(bundle.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).expect("the validator prints JSON"))
}
