//! The storage API's JSON documents and the libvirt `<disk>` XML that every
//! answer about a disk carries. Requests are parsed strictly (unknown
//! fields are refused, so a typo is an error rather than a silently ignored
//! option); answers are built here from the VDI layer's types.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::frontend::attach::export_name;
use crate::vdi::{AttachMode, AttachState, Attachment, VdiInfo};

/// `POST /v1/vdis`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVdi {
    /// Name.
    pub name: String,
    /// Size: bytes, or a string with a binary suffix ("10G").
    pub size: Value,
    /// Copies (default: the cluster's).
    #[serde(default)]
    pub copies: Option<u8>,
}

/// `POST /v1/vdis/{name}/resize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// The new size (bytes or "20G"); never smaller than the current one.
    pub size: Value,
}

/// `POST /v1/vdis/{name}/snapshots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// The snapshot's tag.
    pub tag: String,
}

/// `POST /v1/vdis/{name}/snapshots/{tag}/clones`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clone {
    /// The new VDI's name.
    pub name: String,
    /// Its size if larger than the snapshot's.
    #[serde(default)]
    pub size: Option<Value>,
}

/// `POST /v1/vdis/{name}/attachments`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    /// The host (hypervisor) the disk is attached on.
    pub host: String,
    /// `rw` (default) or `ro`.
    #[serde(default)]
    pub mode: Option<String>,
    /// For a live migration: the attachment the VM migrates from.
    #[serde(default)]
    pub migrate_from: Option<String>,
}

/// Parses a JSON request body.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Parses a size: a JSON integer of bytes, or a string of digits with an
/// optional binary suffix K, M, G, T (as dog reads sizes). It must be a
/// positive multiple of 512 and at most `max`.
pub fn parse_size(v: &Value, max: u64) -> Result<u64, ApiError> {
    let bad = |why: String| ApiError::new("bad_size", why);
    let bytes = match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| bad(format!("size {n} is not a whole number of bytes")))?,
        Value::String(s) => {
            let s = s.trim();
            let (digits, shift) = match s.char_indices().last() {
                Some((i, c)) if c.is_ascii_alphabetic() => {
                    let shift = match c.to_ascii_uppercase() {
                        'K' => 10,
                        'M' => 20,
                        'G' => 30,
                        'T' => 40,
                        _ => return Err(bad(format!("unknown size suffix in {s:?}"))),
                    };
                    (&s[..i], shift)
                }
                _ => (s, 0),
            };
            let n: u64 = digits
                .parse()
                .map_err(|_| bad(format!("{s:?} is not a size")))?;
            n.checked_mul(1 << shift)
                .ok_or_else(|| bad(format!("{s:?} is too large")))?
        }
        other => {
            return Err(bad(format!(
                "size must be a number or a string, not {other}"
            )))
        }
    };
    if bytes == 0 || bytes % 512 != 0 {
        return Err(bad(format!(
            "size {bytes} must be a positive multiple of 512 bytes"
        )));
    }
    if bytes > max {
        return Err(bad(format!(
            "size {bytes} exceeds the maximum of {max} bytes"
        )));
    }
    Ok(bytes)
}

/// Checks a VDI name given to the API: what Sheepdog accepts, minus `@`
/// (which separates snapshots and attachments in NBD export names).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    qemu_proto::name::validate_vdi_name(name)
        .map_err(|e| ApiError::new("bad_name", format!("bad VDI name {name:?}: {e}")))?;
    if name.contains('@') || name.contains('/') {
        return Err(ApiError::new(
            "bad_name",
            format!("bad VDI name {name:?}: '@' and '/' are not allowed"),
        ));
    }
    Ok(())
}

/// Escapes text for an XML attribute.
fn attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A libvirt `<disk>` for an NBD export (raw format; the panel changes the
/// target device).
pub fn nbd_disk(host: IpAddr, port: u16, export: &str, read_only: bool) -> String {
    format!(
        "<disk type='network' device='disk'>\n  \
         <driver name='qemu' type='raw' cache='none' io='native' discard='unmap'/>\n  \
         <source protocol='nbd' name='{}'>\n    \
         <host name='{}' port='{port}'/>\n  \
         </source>\n  \
         <target dev='vda' bus='virtio'/>\n{}</disk>\n",
        attr(export),
        attr(&host.to_string()),
        if read_only { "  <readonly/>\n" } else { "" }
    )
}

/// A libvirt `<disk>` for QEMU's Sheepdog protocol (QEMU up to 5.2).
pub fn sheepdog_disk(node: SocketAddr, name: &str, read_only: bool) -> String {
    format!(
        "<disk type='network' device='disk'>\n  \
         <driver name='qemu' type='raw' cache='none'/>\n  \
         <source protocol='sheepdog' name='{}'>\n    \
         <host name='{}' port='{}'/>\n  \
         </source>\n  \
         <target dev='vda' bus='virtio'/>\n{}</disk>\n",
        attr(name),
        attr(&node.ip().to_string()),
        node.port(),
        if read_only { "  <readonly/>\n" } else { "" }
    )
}

/// Where this node serves clients: its data address and NBD port.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Data address (Sheepdog protocol).
    pub data: SocketAddr,
    /// NBD port (0: disabled).
    pub nbd_port: u16,
}

/// The `disk` object of an answer: libvirt XML per protocol.
fn disks(at: Endpoint, export: &str, sheepdog_name: &str, read_only: bool) -> Value {
    let nbd = (at.nbd_port != 0).then(|| nbd_disk(at.data.ip(), at.nbd_port, export, read_only));
    json!({
        "nbd": nbd,
        "sheepdog": sheepdog_disk(at.data, sheepdog_name, read_only),
    })
}

/// An attachment as the API shows it.
pub fn attachment_json(name: &str, a: &Attachment) -> Value {
    let export = export_name(name, &a.id);
    let read_only = a.mode == AttachMode::ReadOnly;
    let at = Endpoint {
        data: a.node,
        nbd_port: a.nbd_port,
    };
    let (state, from) = match &a.state {
        AttachState::Active => ("active", None),
        AttachState::Pending { from } => ("pending", Some(from.clone())),
    };
    json!({
        "id": a.id,
        "vdi": name,
        "host": a.host,
        "mode": if read_only { "ro" } else { "rw" },
        "state": state,
        "migrate_from": from,
        "node": a.node.to_string(),
        "since": a.since,
        "nbd": (a.nbd_port != 0).then(|| json!({
            "host": a.node.ip().to_string(),
            "port": a.nbd_port,
            "export": export,
        })),
        "disk": disks(at, &export, name, read_only),
    })
}

/// A working VDI with its snapshots and attachments. `all` is every live
/// VDI by vid (to name parents and find snapshots).
pub fn vdi_json(
    info: &VdiInfo,
    all: &HashMap<u32, VdiInfo>,
    attachments: &[Attachment],
    at: Endpoint,
) -> Value {
    let h = &info.header;
    let secs = |t: u64| qemu_proto::inode::sd_time_secs(t);
    let parent = all.get(&h.parent_vdi_id).map(|p| {
        json!({"name": p.header.name, "snapshot": (p.header.is_snapshot()).then(|| p.header.tag.clone())})
    });
    let mut snaps: Vec<&VdiInfo> = all
        .values()
        .filter(|v| v.header.name == h.name && v.header.is_snapshot())
        .collect();
    snaps.sort_by_key(|v| v.header.snap_id);
    let snapshots: Vec<Value> = snaps
        .iter()
        .map(|s| {
            json!({
                "tag": s.header.tag,
                "id": s.header.snap_id,
                "vid": s.vid,
                "size": s.header.vdi_size,
                "created": secs(s.header.snap_ctime),
            })
        })
        .collect();
    json!({
        "name": h.name,
        "vid": info.vid,
        "size": h.vdi_size,
        "copies": h.nr_copies,
        "block_size_shift": h.block_size_shift,
        "created": secs(h.create_time),
        "own_bytes": info.own_bytes,
        "shared_bytes": info.shared_bytes,
        "parent": parent,
        "snapshots": snapshots,
        "attachments": attachments.iter().map(|a| attachment_json(&h.name, a)).collect::<Vec<_>>(),
        "disk": disks(at, &h.name, &h.name, false),
    })
}

/// A snapshot as the API shows it (with XML for read-only use).
pub fn snapshot_json(info: &VdiInfo, at: Endpoint) -> Value {
    let h = &info.header;
    let export = format!("{}@{}", h.name, h.tag);
    json!({
        "vdi": h.name,
        "tag": h.tag,
        "id": h.snap_id,
        "vid": info.vid,
        "size": h.vdi_size,
        "created": qemu_proto::inode::sd_time_secs(h.snap_ctime),
        "disk": disks(at, &export, &format!("{}:{}", h.name, h.tag), true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let max = 4 << 40;
        assert_eq!(parse_size(&json!(1 << 30), max).unwrap(), 1 << 30);
        assert_eq!(parse_size(&json!("10G"), max).unwrap(), 10 << 30);
        assert_eq!(parse_size(&json!("512"), max).unwrap(), 512);
        for bad in [
            json!(0),
            json!(100),
            json!(-4096),
            json!(1.5),
            json!("10X"),
            json!("G"),
            json!("5T"),
            json!(null),
            json!("99999999999999999999G"),
        ] {
            assert_eq!(parse_size(&bad, max).unwrap_err().code, "bad_size", "{bad}");
        }
    }

    #[test]
    fn names_and_xml() {
        assert!(check_name("vm-1").is_ok());
        for bad in ["", "a@b", "a/b", &"x".repeat(256)] {
            assert_eq!(check_name(bad).unwrap_err().code, "bad_name");
        }
        let x = nbd_disk("127.0.0.1".parse().unwrap(), 10809, "a'b@a-0", false);
        assert!(x.contains("name='a&apos;b@a-0'"), "{x}");
        assert!(x.contains("<host name='127.0.0.1' port='10809'/>"), "{x}");
        let s = sheepdog_disk("127.0.0.1:7000".parse().unwrap(), "vm", true);
        assert!(s.contains("protocol='sheepdog' name='vm'") && s.contains("<readonly/>"));
    }
}
