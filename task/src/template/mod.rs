//! Applications and pipeline templates: a producer submits only parameters, and the scheduler fills them into
//! the pipeline's template.
//!
//! An application groups pipelines; a pipeline definition is a name, a template (a task document, either
//! dialect, with `{{name}}` placeholders), and a parameter schema (names, required, default). Each pipeline
//! runs on its own queue, `<app>/<pipeline>`, unless its template names another.
//!
//! ```json
//! {"name": "ocr",
//!  "params": {"url": {"required": true}, "lang": {"default": "eng"}},
//!  "template": {"pipeline": [
//!    {"executorName": "wget", "commands": ["wget -O /mnt/pipe/image.png {{url}}"]},
//!    {"executorName": "tesseract", "commands": ["tesseract /mnt/pipe/image.png /mnt/pipe/out -l {{lang}}"]}],
//!   "maxAttempts": 3}}
//! ```
//!
//! **Values never become shell syntax.** Placeholders may stand in commands and in step `env` values only
//! (anywhere else the definition is refused). In a command, the value is quoted for the place it stands in,
//! found by lexing the command as `sh` does: outside quotes it becomes one single-quoted word (`'...'`, each
//! `'` written `'\''`), inside single quotes each `'` is written `'\''`, inside double quotes `\`, `"`, `$`
//! and `` ` `` are escaped with a backslash. A placeholder where a value cannot be quoted safely (inside
//! backticks, `$((...))`, `${...}`, a comment, or after a here-document `<<`) is refused when the pipeline is
//! defined. In an `env` value it is substituted as is: the executor passes it to the command as an
//! environment variable, which the shell never parses.
//!
//! The template is compiled once, when the pipeline is defined, into pieces of JSON text and holes, so
//! filling it in is one pass over the output with no JSON parsing.
//!
//! - `app.rs`: the definitions (application, pipeline, parameters) and their names;
//! - `compile.rs`: a definition checked and compiled ([`Compiled`]), and filled in with a parameter set;
//! - `shell.rs`: where a placeholder stands in a command, and how a value is quoted there;
//! - `error.rs`: [`TemplateError`].

mod app;
mod compile;
mod error;
mod shell;

pub use self::app::{param_value, params_of, validate_name, AppDef, ParamSpec, PipelineDef, MAX_NAME_BYTES};
pub use self::compile::{Compiled, MAX_PARAMS};
pub use self::error::TemplateError;
pub use self::shell::{quote, Quoting};

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use super::*;
    use crate::pipeline::parse_task;

    fn def(template: Value, params: Option<Value>) -> PipelineDef {
        let mut d = json!({"name": "ocr", "template": template});
        if let Some(p) = params {
            d["params"] = p;
        }
        serde_json::from_value(d).unwrap()
    }

    fn one(cmd: &str) -> Value {
        json!({"pipeline": [{"executorName": "sh", "commands": [cmd]}]})
    }

    fn vals(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The first command of the filled task.
    fn filled(cmd: &str, v: &str) -> String {
        let c = Compiled::new("app", &def(one(cmd), None)).unwrap();
        let spec = c.fill(&vals(&[("v", v)]), 1 << 20).unwrap();
        parse_task(&spec.payload).unwrap().steps[0].commands[0].line().to_string()
    }

    /// What `sh` prints for `printf %s <cmd's words>`: runs the real shell.
    fn sh_out(cmd: &str) -> String {
        let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    const NASTY: &[&str] = &[
        "'; rm -rf /; '",
        "$(touch /tmp/pm-template-pwned)",
        "`touch /tmp/pm-template-pwned`",
        "a\"b\\c$HOME'd",
        "line1\nline2; echo injected",
        "*",
        "",
        "--flag",
        "'\"'\"'",
        "\\",
        "${HOME}",
    ];

    #[test]
    fn values_stay_literal_in_every_quoting_context() {
        for v in NASTY {
            for cmd in
                ["printf %s {{v}}", "printf %s 'pre{{v}}post'", "printf %s \"pre{{v}}post\"", "printf %s x{{v}}y"]
            {
                let line = filled(cmd, v);
                let expect = match cmd {
                    c if c.contains("pre") => format!("pre{v}post"),
                    c if c.contains("x{{") => format!("x{v}y"),
                    _ => v.to_string(),
                };
                assert_eq!(sh_out(&line), expect, "{cmd} with {v:?} became {line}");
            }
        }
        assert!(!std::path::Path::new("/tmp/pm-template-pwned").exists());
    }

    #[test]
    fn values_stay_literal_under_bash_too() {
        if !std::path::Path::new("/bin/bash").exists() {
            return;
        }
        for v in NASTY {
            for cmd in
                ["printf %s {{v}}", "printf %s 'pre{{v}}post'", "printf %s \"pre{{v}}post\"", "(printf %s {{v}})"]
            {
                let line = filled(cmd, v);
                let out = std::process::Command::new("/bin/bash").arg("-c").arg(&line).output().unwrap();
                let got = String::from_utf8(out.stdout).unwrap();
                assert!(got.contains(v) || v.is_empty(), "{cmd} with {v:?} became {line}: {got:?}");
            }
        }
        assert!(!std::path::Path::new("/tmp/pm-template-pwned").exists());
    }

    #[test]
    fn unsafe_places_are_refused_at_definition() {
        for cmd in [
            "echo `echo {{v}}`",
            "echo $(( {{v}} + 1 ))",
            "echo ${X:-{{v}}}",
            "echo hi # {{v}}",
            "cat <<EOF\n{{v}}\nEOF",
            "echo \\{{v}}",
            "echo '{{v}}",
            "x=$(case a in a) echo {{v}};; esac)",
            // Each of these once let a value out of its quotes in dash or bash.
            "echo \"$( (true) ; echo {{v}} )\"",
            "echo \"$(f() { echo a; }; f {{v}})\"",
            "echo $(true)#'\n{{v}}\n' #'",
            "echo $((1))#'\n{{v}}\n' #'",
            "echo \"${X:-'{{v}}'}\"",
            "echo $'{{v}}'",
            "echo $[ {{v}} ]",
            "(( {{v}} ))",
            "let n={{v}}",
            "[[ {{v}} -eq 1 ]]",
            "eval echo {{v}}",
            "declare -i n={{v}}",
            "cat <(echo a) {{v}}",
            "echo \"$HOME{{v}}\"",
            "echo a # c\necho {{v}}",
        ] {
            let e = Compiled::new("app", &def(one(cmd), None)).unwrap_err().to_string();
            assert!(e.contains("{{v}}") && e.contains("cannot be quoted safely"), "{cmd}: {e}");
        }
        // A '#' inside a word is not a comment; '#' inside quotes neither; subshells and groups are fine.
        assert_eq!(sh_out(&filled("printf %s a#{{v}}", "1; b")), "a#1; b");
        assert_eq!(sh_out(&filled("printf %s '#' \"#\" {{v}}", "x")), "##x");
        assert_eq!(sh_out(&filled("(printf %s {{v}}) && { printf %s \"$HOME\" >/dev/null; }", "y")), "y");
        assert!(Compiled::new("app", &def(one("cat <<< {{v}}"), None)).is_err(), "here-strings too");
    }

    #[test]
    fn placeholders_only_in_commands_and_env() {
        for t in [
            json!({"pipeline": [{"executorName": "{{v}}", "commands": ["true"]}]}),
            json!({"pipeline": [{"executorName": "sh", "workDir": "{{v}}", "commands": ["true"]}]}),
            json!({"pipeline": [{"executorName": "sh", "commands": ["true"]}], "queue": "{{v}}"}),
        ] {
            let e = Compiled::new("app", &def(t, None)).unwrap_err().to_string();
            assert!(e.contains("may stand only in commands"), "{e}");
        }
        let t = json!({"pipeline": [{"executorName": "sh", "env": {"URL": "{{v}}"}, "commands": ["echo \"$URL\""]}]});
        let c = Compiled::new("app", &def(t, None)).unwrap();
        let task = parse_task(&c.fill(&vals(&[("v", "'$(x)\"")]), 100).unwrap().payload).unwrap();
        assert_eq!(task.steps[0].env["URL"], "'$(x)\"", "env values are passed as is");
    }

    #[test]
    fn params_are_checked_at_submit() {
        let t = json!({"pipeline": [{"executor": "wget", "commands": ["wget -O /mnt/pipe/image.png {{url}} {{ lang }}"]}],
                       "maxAttempts": 3, "leaseSeconds": 20});
        let c = Compiled::new("myname", &def(t.clone(), Some(json!({"url": {}, "lang": {"default": "eng"}})))).unwrap();
        assert_eq!(c.queue, "myname/ocr");
        assert_eq!((c.spec.max_attempts, c.spec.lease_ms, c.spec.executors.clone()), (3, 20_000, vec!["wget".into()]));
        assert_eq!(c.param_names(), vec!["lang", "url"]);
        let spec = c.fill(&vals(&[("url", "http://x/a b.png")]), 100).unwrap();
        let task = parse_task(&spec.payload).unwrap();
        assert_eq!(task.steps[0].commands[0].line(), "wget -O /mnt/pipe/image.png 'http://x/a b.png' 'eng'");
        assert_eq!(spec.queue, "myname/ocr");
        assert_eq!(c.fill(&vals(&[]), 100).unwrap_err(), TemplateError::Missing(vec!["url".into()]));
        let e = c.fill(&vals(&[("url", "u"), ("urll", "x")]), 100).unwrap_err().to_string();
        assert_eq!(e, "unknown parameter urll (this pipeline takes: lang, url)");
        let e = c.fill(&vals(&[("url", "0123456789")]), 4).unwrap_err().to_string();
        assert!(e.contains("url") && e.contains("limit is 4"), "{e}");
        assert!(c.fill(&vals(&[("url", "a\0b")]), 100).unwrap_err().to_string().contains("NUL"));
        // Undeclared placeholders, bad defaults, key in the template.
        let e = Compiled::new("a", &def(t.clone(), Some(json!({"url": {}})))).unwrap_err().to_string();
        assert!(e.contains("{{lang}}") && e.contains("does not declare"), "{e}");
        let e = Compiled::new("a", &def(t, Some(json!({"url": {}, "lang": {"default": [1]}})))).unwrap_err();
        assert!(e.to_string().contains("default must be"), "{e}");
        let keyed = json!({"pipeline": [{"executorName": "sh", "commands": ["true"]}], "key": "k"});
        assert!(Compiled::new("a", &def(keyed, None)).unwrap_err().to_string().contains("key and idempotencyKey"));
        // Without "params", every placeholder is required; numbers and booleans are taken as text.
        let c = Compiled::new("a", &def(one("echo {{a}} {{b}}"), None)).unwrap();
        assert_eq!(c.fill(&vals(&[("a", "1")]), 9).unwrap_err(), TemplateError::Missing(vec!["b".into()]));
        assert_eq!(param_value(&json!(2.5)).as_deref(), Some("2.5"));
        assert_eq!(param_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(param_value(&json!({"a": 1})), None);
    }

    #[test]
    fn the_commands_dialect_and_follow_ups_take_parameters_too() {
        let t = json!({"commands": [{"executorName": "sh", "commandLines": ["echo {{v}}"]}],
                       "onSuccess": [{"pipeline": [{"executorName": "sh", "commands": [{"run": "echo {{v}}!", "timeoutSeconds": 5}]}]}]});
        let c = Compiled::new("a", &def(t, None)).unwrap();
        let spec = c.fill(&vals(&[("v", "x y")]), 100).unwrap();
        let doc: Value = serde_json::from_slice(&spec.payload).unwrap();
        assert_eq!(doc["commands"][0]["commandLines"][0], "echo 'x y'");
        assert_eq!(doc["onSuccess"][0]["pipeline"][0]["commands"][0]["run"], "echo 'x y'!");
    }

    #[test]
    fn names_and_documents_are_checked() {
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", &"a".repeat(64)] {
            assert!(validate_name("pipeline", bad).is_err(), "{bad:?}");
        }
        validate_name("pipeline", "ocr-2").unwrap();
        let doc = json!({"name": "myname", "pipelines": [
            {"name": "ocr", "template": one("echo {{v}}")}, {"name": "ocr", "template": one("true")}]});
        let e = AppDef::parse(doc.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("defined twice"), "{e}");
        let e = AppDef::parse(br#"{"name":"x","pipelines":[],"extra":1}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        let e = Compiled::new("a", &def(json!({"pipeline": []}), None)).unwrap_err().to_string();
        assert!(e.starts_with("template: ") && e.contains("no steps"), "{e}");
        let e = Compiled::new("a", &def(json!("echo"), None)).unwrap_err().to_string();
        assert!(e.contains("task document"), "{e}");
        let e = Compiled::new("a", &def(one("echo \u{E000}"), None)).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
        // Reserved characters in a field name are refused too (they once made a hole out of a key).
        for key in ["\u{E000}9\u{E001}", "\u{E000}0\u{E001}"] {
            let mut t = one("echo {{v}}");
            t[key] = json!(1);
            let e = Compiled::new("a", &def(t, None)).unwrap_err().to_string();
            assert!(e.contains("reserved"), "{e}");
            let t = json!({"pipeline": [{"executorName": "sh", "env": {key: "x"}, "commands": ["echo {{v}}"]}]});
            assert!(Compiled::new("a", &def(t, None)).unwrap_err().to_string().contains("reserved"));
        }
        // Not placeholders: left as they are.
        let c = Compiled::new("a", &def(one("docker ps --format {{.Names}} {{ }} {x}"), None)).unwrap();
        assert!(c.param_names().is_empty());
    }
}
