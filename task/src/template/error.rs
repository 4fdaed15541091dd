//! Why a template was refused: a bad definition, or a parameter set that does not fit it.

/// Why a definition or a parameter set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The definition is not valid (bad name, bad template, placeholder where none may be).
    #[error("{0}")]
    Invalid(String),
    /// Required parameters without a default were not given.
    #[error("missing parameter{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    Missing(Vec<String>),
    /// Parameters the pipeline does not declare.
    #[error("unknown parameter{} {} (this pipeline takes: {})", if .unknown.len() == 1 { "" } else { "s" },
        .unknown.join(", "), if .known.is_empty() { "none".to_string() } else { .known.join(", ") })]
    Unknown {
        /// The names given that the pipeline does not declare.
        unknown: Vec<String>,
        /// The names it declares.
        known: Vec<String>,
    },
    /// A value that cannot be used (too long, or holding a NUL byte).
    #[error("parameter {name}: {why}")]
    BadValue {
        /// The parameter.
        name: String,
        /// What is wrong with its value.
        why: String,
    },
}

pub(super) fn invalid(msg: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(msg.into())
}
