//! A small client for the storage API (ureq, blocking, like the rest of the
//! harness) and a checker of answers against `docs/openapi.json`.
//!
//! Every call returns the status, the headers it needs and the parsed JSON
//! body (text for `/metrics`), whatever the status: tests assert on error
//! answers as much as on successes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// Upper bound for one API call (a delete of a large VDI included).
pub const API_TIMEOUT: Duration = Duration::from_secs(120);

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body (`Value::Null` if it was not JSON).
    pub json: Value,
    /// The raw body.
    pub text: String,
    /// True if the answer carried `Idempotent-Replayed: true`.
    pub replayed: bool,
}

impl Answer {
    /// The error code of an error answer ("" if none).
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }
}

/// A client of one node's API.
#[derive(Clone)]
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client of `http://127.0.0.1:PORT`.
    pub fn new(port: u16) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(API_TIMEOUT))
            .build()
            .into();
        Api {
            base: format!("http://127.0.0.1:{port}"),
            agent,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request with an optional raw body and idempotency key.
    pub fn send(&self, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> Answer {
        let url = format!("{}{path}", self.base);
        let result = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => {
                let mut r = self.agent.delete(&url);
                if let Some(k) = key {
                    r = r.header("Idempotency-Key", k);
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "POST" => self.agent.post(&url),
                    "PUT" => self.agent.put(&url),
                    "PATCH" => self.agent.patch(&url),
                    other => panic!("unsupported method {other}"),
                };
                r = r.header("Content-Type", "application/json");
                if let Some(k) = key {
                    r = r.header("Idempotency-Key", k);
                }
                r.send(b.unwrap_or(""))
            }
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            json,
            text,
            replayed,
        }
    }

    /// GET.
    pub fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, None)
    }

    /// POST a JSON document.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, Some(&body.to_string()), None)
    }

    /// POST with an idempotency key.
    pub fn post_key(&self, path: &str, body: &Value, key: &str) -> Answer {
        self.send("POST", path, Some(&body.to_string()), Some(key))
    }

    /// DELETE.
    pub fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, None)
    }

    /// DELETE with an idempotency key.
    pub fn delete_key(&self, path: &str, key: &str) -> Answer {
        self.send("DELETE", path, None, Some(key))
    }

    /// Like [`Api::send`], panicking unless the status is `want`.
    pub fn expect(&self, want: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
        let text = body.map(|b| b.to_string());
        let a = self.send(method, path, text.as_deref(), None);
        assert_eq!(
            a.status, want,
            "{method} {path} {body:?}: expected {want}, got {}: {}",
            a.status, a.text
        );
        a.json
    }
}

/// Percent-encodes a path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `docs/openapi.json` of this repository.
pub fn openapi() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("openapi.json parses")
}

/// The schema the OpenAPI document gives for `status` of `method path`
/// (`path` in template form, e.g. `/v1/vdis/{name}`), if JSON.
pub fn response_schema(doc: &Value, method: &str, path: &str, status: u16) -> Option<Value> {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    let r = &op["responses"][status.to_string()];
    assert!(
        r.is_object(),
        "{method} {path}: status {status} is not documented"
    );
    r["content"]["application/json"]["schema"]
        .as_object()
        .map(|o| Value::Object(o.clone()))
}

/// Checks `value` against `schema` (the subset of OpenAPI 3.0 the document
/// uses: $ref, type, required, properties, items, enum, nullable, allOf,
/// oneOf). Returns the first mismatch.
pub fn check_schema(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or_default();
        return check_schema(doc, &doc["components"]["schemas"][name], value, at);
    }
    if value.is_null() {
        return if schema["nullable"] == Value::Bool(true) {
            Ok(())
        } else {
            Err(format!("{at}: null where the schema does not allow it"))
        };
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check_schema(doc, s, value, at)?;
        }
    }
    if let Some(any) = schema["oneOf"].as_array() {
        if !any.iter().any(|s| check_schema(doc, s, value, at).is_ok()) {
            return Err(format!("{at}: matches none of oneOf"));
        }
    }
    if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_u64() || value.is_i64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            _ => true,
        };
        if !ok {
            return Err(format!("{at}: expected {t}, got {value}"));
        }
    }
    if let Some(e) = schema["enum"].as_array() {
        if !e.contains(value) {
            return Err(format!("{at}: {value} is not one of {e:?}"));
        }
    }
    if let Some(req) = schema["required"].as_array() {
        for k in req {
            let k = k.as_str().unwrap_or_default();
            if value.get(k).is_none() {
                return Err(format!("{at}: missing required {k:?} in {value}"));
            }
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => check_schema(doc, s, v, &format!("{at}.{k}"))?,
                None => return Err(format!("{at}: undocumented property {k:?}")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_schema(doc, items, v, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// The NBD address of a libvirt `<disk>`: (host, port, export name),
/// unescaped, exactly as libvirt would hand them to QEMU.
pub fn nbd_from_xml(xml: &str) -> (String, u16, String) {
    let attr = |tag: &str, name: &str| -> String {
        let start = xml
            .find(&format!("<{tag} "))
            .unwrap_or_else(|| panic!("no <{tag}> in {xml}"));
        let rest = &xml[start..];
        let end = rest.find('>').expect("tag end");
        let el = &rest[..end];
        let key = format!("{name}='");
        let at = el.find(&key).unwrap_or_else(|| panic!("no {name} in {el}")) + key.len();
        let v = &el[at..];
        let v = &v[..v.find('\'').expect("attribute end")];
        v.replace("&apos;", "'")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    assert!(xml.contains("protocol='nbd'"), "not an NBD disk: {xml}");
    let port = attr("host", "port").parse().expect("port");
    (attr("host", "name"), port, attr("source", "name"))
}

/// The `json:` filename QEMU's tools take for an NBD export, which is what
/// libvirt passes for a `<source protocol='nbd'>` (as `-blockdev`).
pub fn qemu_nbd_json(host: &str, port: u16, export: &str) -> String {
    serde_json::json!({
        "driver": "raw",
        "file": {
            "driver": "nbd",
            "server": {"type": "inet", "host": host, "port": port.to_string()},
            "export": export,
        }
    })
    .to_string()
    .replacen('{', "json:{", 1)
}
