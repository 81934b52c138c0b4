//! [`Manifest::validate`]: what the types of a manifest cannot say (names, lengths, label sets,
//! ranges, paths), each error naming its field as `models/README.md` ("Validation") lists them.

use std::path::{Component, Path};

use super::*;

impl Manifest {
    /// Checks everything the types cannot: names, lengths, label sets, ranges.
    pub fn validate(&self, folder: &str) -> Result<(), ManifestError> {
        if self.id.is_empty()
            || !self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ManifestError::invalid(
                "id",
                format!("must match [a-z0-9_]+, got {:?}", self.id),
            ));
        }
        if self.id != folder {
            return Err(ManifestError::invalid(
                "id",
                format!(
                    "is {:?} but the folder is named {folder:?}; they must be equal",
                    self.id
                ),
            ));
        }
        for (field, value) in [
            ("version", &self.version),
            ("name", &self.name),
            ("input.name", &self.input.name),
            ("output.name", &self.output.name),
        ] {
            if value.trim().is_empty() {
                return Err(ManifestError::invalid(field, "must not be empty"));
            }
        }
        check_relative_path("weights", &self.weights)?;
        check_relative_path("card", &self.card)?;
        self.validate_input()?;
        self.validate_output()?;
        self.validate_decision()?;
        self.validate_stage()?;
        for (i, figure) in self.figures.iter().enumerate() {
            let field = format!("figures[{i}].file");
            check_relative_path(&field, &figure.file)?;
            if !figure.file.ends_with(".png") {
                return Err(ManifestError::invalid(field, "must be a .png file"));
            }
            if self.figures[..i].iter().any(|f| f.name() == figure.name()) {
                return Err(ManifestError::invalid(
                    field,
                    format!("repeats the file name {:?}", figure.name()),
                ));
            }
            if figure.title.trim().is_empty() {
                return Err(ManifestError::invalid(
                    format!("figures[{i}].title"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    /// A model ships as `screening` only when its held-out figures meet its declared minimum.
    fn validate_stage(&self) -> Result<(), ManifestError> {
        if let Some(minimum) = &self.minimum {
            for (key, value) in minimum {
                if !value.is_finite() {
                    return Err(ManifestError::invalid(
                        format!("minimum.{key}"),
                        "must be a finite number",
                    ));
                }
            }
        }
        if self.stage == Stage::Research {
            return Ok(());
        }
        let Some(minimum) = self.minimum.as_ref().filter(|m| !m.is_empty()) else {
            return Err(ManifestError::invalid(
                "stage",
                "is \"screening\" but the manifest declares no [minimum] for its held-out metrics",
            ));
        };
        let mut unmet = Vec::new();
        for (key, required) in minimum {
            match self.metrics.as_ref().and_then(|m| m.value(key)) {
                Some(measured) if measured >= *required => {}
                Some(measured) => unmet.push(format!("{key} {measured} < {required}")),
                None => unmet.push(format!("{key} not measured (needs {required})")),
            }
        }
        if unmet.is_empty() {
            Ok(())
        } else {
            Err(ManifestError::invalid(
                "stage",
                format!(
                    "is \"screening\" but the held-out metrics miss the declared minimum: {}",
                    unmet.join(", ")
                ),
            ))
        }
    }

    fn validate_input(&self) -> Result<(), ManifestError> {
        let input = &self.input;
        for (field, side) in [("input.width", input.width), ("input.height", input.height)] {
            if side == 0 || side > MAX_INPUT_SIDE {
                return Err(ManifestError::invalid(
                    field,
                    format!("must be 1..={MAX_INPUT_SIDE}, got {side}"),
                ));
            }
        }
        for (i, step) in input.preprocess.iter().enumerate() {
            if let PreprocessStep::Sharpen { kernel } = step {
                let field = format!("input.preprocess[{i}].kernel");
                if kernel.len() != 9 {
                    return Err(ManifestError::invalid(
                        field,
                        format!("must have 9 entries (3x3, row-major), got {}", kernel.len()),
                    ));
                }
                if kernel.iter().any(|k| !k.is_finite()) {
                    return Err(ManifestError::invalid(field, "must be finite numbers"));
                }
            }
        }
        let norm = &input.normalize;
        if !norm.scale.is_finite() || norm.scale == 0.0 {
            return Err(ManifestError::invalid(
                "input.normalize.scale",
                "must be a finite, non-zero number",
            ));
        }
        let channels = input.channels();
        for (field, values) in [
            ("input.normalize.mean", &norm.mean),
            ("input.normalize.std", &norm.std),
        ] {
            if values.len() != channels {
                return Err(ManifestError::invalid(
                    field,
                    format!(
                        "must have {channels} value(s), one per channel of a {} image, got {}",
                        color_name(input.color),
                        values.len()
                    ),
                ));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(ManifestError::invalid(field, "must be finite numbers"));
            }
        }
        if norm.std.contains(&0.0) {
            return Err(ManifestError::invalid(
                "input.normalize.std",
                "must not contain 0",
            ));
        }
        Ok(())
    }

    fn validate_output(&self) -> Result<(), ManifestError> {
        let output = &self.output;
        let labels = &output.labels;
        if labels.is_empty() {
            return Err(ManifestError::invalid("output.labels", "must not be empty"));
        }
        if labels.iter().any(|l| l.trim().is_empty()) {
            return Err(ManifestError::invalid(
                "output.labels",
                "must not contain an empty label",
            ));
        }
        if let Some(heatmap) = &output.heatmap
            && (heatmap.trim().is_empty() || *heatmap == output.name)
        {
            return Err(ManifestError::invalid(
                "output.heatmap",
                "must name a second ONNX output, other than output.name",
            ));
        }
        for (i, label) in labels.iter().enumerate() {
            if labels[..i].contains(label) {
                return Err(ManifestError::invalid(
                    "output.labels",
                    format!("lists {label:?} twice"),
                ));
            }
        }
        let expected = match self.task {
            Task::Binary => labels.len() == 2,
            Task::Multiclass => labels.len() >= 2,
            Task::Ordinal => labels.len() >= 3,
        };
        if !expected {
            let wanted = match self.task {
                Task::Binary => "exactly 2 labels",
                Task::Multiclass => "at least 2 labels",
                Task::Ordinal => "at least 3 labels",
            };
            return Err(ManifestError::invalid(
                "output.labels",
                format!(
                    "has {} label(s); a {:?} task needs {wanted}",
                    labels.len(),
                    self.task
                ),
            ));
        }
        if output.activation.is_single_output() {
            if labels.len() != 2 {
                return Err(ManifestError::invalid(
                    "output.labels",
                    format!(
                        "must have exactly 2 labels for activation {:?}, got {}",
                        output.activation,
                        labels.len()
                    ),
                ));
            }
            match &output.sigmoid_positive {
                None => {
                    return Err(ManifestError::invalid(
                        "output.sigmoid_positive",
                        "is required for a sigmoid activation: name the label the output is the probability of",
                    ));
                }
                Some(positive) if !labels.contains(positive) => {
                    return Err(ManifestError::invalid(
                        "output.sigmoid_positive",
                        format!("{positive:?} is not one of output.labels {labels:?}"),
                    ));
                }
                Some(_) => {}
            }
        } else if output.sigmoid_positive.is_some() {
            return Err(ManifestError::invalid(
                "output.sigmoid_positive",
                format!(
                    "only applies to sigmoid activations, not {:?}",
                    output.activation
                ),
            ));
        }
        Ok(())
    }

    fn validate_decision(&self) -> Result<(), ManifestError> {
        let decision = &self.decision;
        let labels = &self.output.labels;
        if decision
            .finding_name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(ManifestError::invalid(
                "decision.finding_name",
                "must not be empty",
            ));
        }
        if !labels.contains(&decision.finding) {
            return Err(ManifestError::invalid(
                "decision.finding",
                format!(
                    "{:?} is not one of output.labels {labels:?}",
                    decision.finding
                ),
            ));
        }
        if !(decision.threshold > 0.0 && decision.threshold < 1.0) {
            return Err(ManifestError::invalid(
                "decision.threshold",
                format!(
                    "must be strictly between 0 and 1, got {}",
                    decision.threshold
                ),
            ));
        }
        match (self.task, &decision.referable) {
            (Task::Ordinal, None) => Err(ManifestError::invalid(
                "decision.referable",
                "is required for an ordinal task: list the grades that make up the finding",
            )),
            (Task::Ordinal, Some(referable)) => {
                if referable.is_empty() {
                    return Err(ManifestError::invalid(
                        "decision.referable",
                        "must not be empty",
                    ));
                }
                for (i, grade) in referable.iter().enumerate() {
                    if !labels.contains(grade) {
                        return Err(ManifestError::invalid(
                            "decision.referable",
                            format!("{grade:?} is not one of output.labels {labels:?}"),
                        ));
                    }
                    if referable[..i].contains(grade) {
                        return Err(ManifestError::invalid(
                            "decision.referable",
                            format!("lists {grade:?} twice"),
                        ));
                    }
                }
                if referable[0] != decision.finding {
                    return Err(ManifestError::invalid(
                        "decision.finding",
                        format!(
                            "must be the first grade of decision.referable ({:?}), got {:?}",
                            referable[0], decision.finding
                        ),
                    ));
                }
                Ok(())
            }
            (_, Some(_)) => Err(ManifestError::invalid(
                "decision.referable",
                "only applies to ordinal tasks",
            )),
            (_, None) => Ok(()),
        }
    }
}

fn color_name(color: ColorSpace) -> &'static str {
    match color {
        ColorSpace::Gray => "gray",
        ColorSpace::Rgb => "rgb",
    }
}

/// A path inside the model folder: relative, and never climbing out of it.
fn check_relative_path(field: &str, value: &str) -> Result<(), ManifestError> {
    let path = Path::new(value);
    let inside = !value.is_empty()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(())
    } else {
        Err(ManifestError::invalid(
            field,
            format!("must be a path inside the model folder, got {value:?}"),
        ))
    }
}
