//! A network's raw output -> class probabilities -> a screening result, per the manifest's
//! `[output]` and `[decision]`.

use crate::job::{ClassProbability, ScreeningResult};

use super::manifest::{Activation, Manifest, Task};

/// What the manifest says about reading the output, resolved to indices once at load time.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    task: Task,
    activation: Activation,
    labels: Vec<String>,
    /// Index of the class a single sigmoid output is the probability of.
    sigmoid_positive: usize,
    finding: usize,
    /// What results call the finding (`decision.finding_name`, else its label).
    finding_name: String,
    /// Ordinal: the grades summed into p(finding); otherwise just the finding.
    referable: Vec<usize>,
}

impl Decision {
    /// Resolves label names; the manifest has been validated, so every name is a label.
    pub(crate) fn new(manifest: &Manifest) -> Self {
        let index = |label: &str| manifest.label_index(label).expect("validated label");
        let finding = index(&manifest.decision.finding);
        Self {
            task: manifest.task,
            activation: manifest.output.activation,
            labels: manifest.output.labels.clone(),
            sigmoid_positive: manifest.output.sigmoid_positive.as_deref().map_or(0, index),
            finding,
            finding_name: manifest.decision.finding_name().to_owned(),
            referable: match &manifest.decision.referable {
                Some(grades) => grades.iter().map(|g| index(g)).collect(),
                None => vec![finding],
            },
        }
    }

    /// Output values per image: 1 for sigmoid activations, else one per label.
    pub(crate) fn outputs_per_image(&self) -> usize {
        if self.activation.is_single_output() {
            1
        } else {
            self.labels.len()
        }
    }

    /// Class probabilities (class order) from one image's output values.
    pub(crate) fn probabilities(&self, raw: &[f32]) -> Result<Vec<f64>, String> {
        if let Some(bad) = raw.iter().find(|v| !v.is_finite()) {
            return Err(format!("the output contains {bad}"));
        }
        let raw: Vec<f64> = raw.iter().map(|&v| f64::from(v)).collect();
        let two_classes = |p: f64| {
            let mut probs = vec![1.0 - p; 2];
            probs[self.sigmoid_positive] = p;
            probs
        };
        match self.activation {
            Activation::Softmax => {
                let max = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exp: Vec<f64> = raw.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = exp.iter().sum();
                Ok(exp.into_iter().map(|e| e / total).collect())
            }
            Activation::Sigmoid => Ok(two_classes(1.0 / (1.0 + (-raw[0]).exp()))),
            Activation::SigmoidProbability => {
                let p = raw[0];
                if !(0.0..=1.0).contains(&p) {
                    return Err(format!(
                        "activation sigmoid_probability expects a probability, got {p}: is output.activation right?"
                    ));
                }
                Ok(two_classes(p))
            }
            Activation::None => {
                let total: f64 = raw.iter().sum();
                if raw.iter().any(|p| !(0.0..=1.0 + 1e-6).contains(p)) || (total - 1.0).abs() > 1e-3
                {
                    return Err(format!(
                        "activation none expects probabilities summing to 1, got {raw:?}: is output.activation right?"
                    ));
                }
                Ok(raw)
            }
        }
    }

    /// The result for one image under `threshold`.
    pub(crate) fn result(&self, probabilities: Vec<f64>, threshold: f64) -> ScreeningResult {
        let finding_probability: f64 = self.referable.iter().map(|&i| probabilities[i]).sum();
        let positive = finding_probability >= threshold;
        let label = match self.task {
            Task::Binary => {
                if positive {
                    self.finding
                } else {
                    1 - self.finding
                }
            }
            Task::Multiclass | Task::Ordinal => argmax(&probabilities),
        };
        ScreeningResult {
            label: self.labels[label].clone(),
            probabilities: self
                .labels
                .iter()
                .zip(&probabilities)
                .map(|(label, &probability)| ClassProbability {
                    label: label.clone(),
                    probability,
                })
                .collect(),
            finding: self.finding_name.clone(),
            finding_probability,
            threshold,
            positive,
            stage: None,
            heatmap: None,
        }
    }
}

/// Index of the largest value (the first, on ties).
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(
        task: &str,
        activation: &str,
        labels: &str,
        extra_output: &str,
        decision: &str,
    ) -> Manifest {
        let text = format!(
            r#"
id = "m"
version = "1"
name = "M"
modality = "fundus"
task = "{task}"
description = ""
weights = "model.onnx"
card = "CARD.md"
[input]
name = "input"
layout = "nchw"
color = "gray"
width = 8
height = 8
[input.normalize]
scale = 1.0
mean = [0.0]
std = [1.0]
[output]
name = "output"
activation = "{activation}"
labels = {labels}
{extra_output}
[decision]
{decision}
"#
        );
        Manifest::parse(&text, "m").unwrap()
    }

    #[test]
    fn binary_softmax_label_follows_the_threshold() {
        let d = Decision::new(&manifest(
            "binary",
            "softmax",
            r#"["Uninfected", "Parasitized"]"#,
            "",
            "finding = \"Parasitized\"\nthreshold = 0.3",
        ));
        let probs = d.probabilities(&[1.0, 0.0]).unwrap();
        assert!((probs[0] - 0.731_058_578_630_004_9).abs() < 1e-12);
        let r = d.result(probs, 0.3);
        assert_eq!(r.label, "Uninfected"); // p(Parasitized) = 0.269 < 0.3
        assert!(!r.positive);
        let r = d.result(d.probabilities(&[1.0, 0.0]).unwrap(), 0.25);
        assert_eq!(r.label, "Parasitized");
        assert!(r.positive);
        assert_eq!(r.threshold, 0.25);
        assert_eq!(r.finding, "Parasitized");
        assert_eq!(r.probabilities[1].label, "Parasitized");
    }

    #[test]
    fn sigmoid_probability_of_the_negative_class() {
        // The original malaria model outputs p(Uninfected).
        let d = Decision::new(&manifest(
            "binary",
            "sigmoid_probability",
            r#"["Parasitized", "Uninfected"]"#,
            "sigmoid_positive = \"Uninfected\"",
            "finding = \"Parasitized\"\nthreshold = 0.5",
        ));
        assert_eq!(d.outputs_per_image(), 1);
        let probs = d.probabilities(&[0.9]).unwrap();
        assert_eq!(probs, vec![1.0 - f64::from(0.9f32), f64::from(0.9f32)]);
        let r = d.result(probs, 0.5);
        assert_eq!(r.label, "Uninfected");
        assert!((r.finding_probability - 0.1).abs() < 1e-6);
        assert!(d.probabilities(&[1.5]).is_err());
    }

    #[test]
    fn sigmoid_logit() {
        let d = Decision::new(&manifest(
            "binary",
            "sigmoid",
            r#"["Normal", "Tuberculosis"]"#,
            "sigmoid_positive = \"Tuberculosis\"",
            "finding = \"Tuberculosis\"\nthreshold = 0.5",
        ));
        assert_eq!(d.probabilities(&[0.0]).unwrap(), vec![0.5, 0.5]);
        assert_eq!(d.result(vec![0.5, 0.5], 0.5).label, "Tuberculosis");
    }

    #[test]
    fn ordinal_sums_the_referable_grades() {
        let d = Decision::new(&manifest(
            "ordinal",
            "none",
            r#"["No DR", "Mild", "Moderate", "Severe", "Proliferative"]"#,
            "",
            "finding = \"Moderate\"\nthreshold = 0.5\nreferable = [\"Moderate\", \"Severe\", \"Proliferative\"]\nfinding_name = \"Referable DR\"",
        ));
        let probs = d.probabilities(&[0.4, 0.1, 0.2, 0.2, 0.1]).unwrap();
        let r = d.result(probs, 0.5);
        assert_eq!(r.label, "No DR");
        // The finding is the referable group, not its first grade.
        assert_eq!(r.finding, "Referable DR");
        assert!((r.finding_probability - 0.5).abs() < 1e-6);
        assert!(r.positive);
        assert!(d.probabilities(&[0.4, 0.4, 0.4, 0.4, 0.4]).is_err());
    }

    #[test]
    fn multiclass_is_argmax() {
        let d = Decision::new(&manifest(
            "multiclass",
            "softmax",
            r#"["Normal", "Pneumonia", "COVID-19"]"#,
            "",
            "finding = \"COVID-19\"\nthreshold = 0.5",
        ));
        let r = d.result(d.probabilities(&[0.0, 2.0, 1.0]).unwrap(), 0.5);
        assert_eq!(r.label, "Pneumonia");
        assert!(!r.positive);
        assert!(d.probabilities(&[f32::NAN, 0.0, 0.0]).is_err());
    }
}
