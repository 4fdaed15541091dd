//! Applications and pipeline definitions as stored and sent (`pmctl app create`, the HTTP API): the data,
//! its names, and parameter values as producers give them. Checking a definition means compiling it
//! (`compile.rs`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{invalid, TemplateError};

/// Longest application or pipeline name, in bytes (a DNS label: it names Kubernetes objects too).
pub const MAX_NAME_BYTES: usize = 63;

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamSpec {
    /// Must be given at submit. Default: true unless a default is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value used when none is given (a string, number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A pipeline definition, as stored and as sent by `pmctl app create` and the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineDef {
    /// Name within its application: 1 to 63 of `[a-z0-9-]`, starting and ending with a letter or digit.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The parameters, by name. Absent: every placeholder of the template is a required parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, ParamSpec>>,
    /// A task document (either dialect) with `{{name}}` placeholders; its task-level options (`maxAttempts`,
    /// `leaseSeconds`, `timeoutSeconds`, `priority`, `delaySeconds`, `queue`) are the pipeline's defaults.
    pub template: Value,
}

/// An application: a named group of pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppDef {
    /// 1 to 63 of `[a-z0-9-]`, starting and ending with a letter or digit.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its pipelines (names unique).
    #[serde(default)]
    pub pipelines: Vec<PipelineDef>,
}

/// Checks an application or pipeline name (`what` names it in the error).
pub fn validate_name(what: &str, name: &str) -> Result<(), TemplateError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME_BYTES
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name {name:?}: use 1 to {MAX_NAME_BYTES} lowercase letters, digits and '-', starting and ending \
             with a letter or digit"
        )))
    }
}

impl PipelineDef {
    /// Parses a pipeline definition (checked when compiled).
    pub fn parse(json: &[u8]) -> Result<PipelineDef, TemplateError> {
        serde_json::from_slice(json).map_err(|e| invalid(format!("invalid pipeline definition: {e}")))
    }
}

pub(super) fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A parameter value from JSON (a string, number or boolean), as the HTTP API and `pmctl` take them.
pub fn param_value(v: &Value) -> Option<String> {
    scalar(v)
}

/// A JSON object's members as one parameter set (values: strings, numbers and booleans).
pub fn params_of(v: &Value) -> Result<std::collections::HashMap<String, String>, String> {
    let Value::Object(obj) = v else { return Err("expected a JSON object of parameters".into()) };
    obj.iter()
        .map(|(k, v)| {
            scalar(v)
                .map(|s| (k.clone(), s))
                .ok_or_else(|| format!("parameter {k}: a value must be a string, number or boolean"))
        })
        .collect()
}
