//! Handlers of `/v1/vdis...`: list, create, show, delete, resize, snapshot,
//! clone, attach and detach. Each parses and checks its input, calls the
//! VDI layer once, and shapes the answer with `model`; changes may carry an
//! idempotency key.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::error::ApiError;
use super::idempotency::{self, Answer};
use super::model::{self, Endpoint};
use super::Api;
use crate::vdi::{
    new_attachment_id, AttachMode, AttachState, Attachment, LockOp, NewVdi, VdiInfo, VdiRef,
};

impl Api {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            data: self.sheep.local.addr,
            nbd_port: self.sheep.client_ports().nbd,
        }
    }

    /// Every live VDI of `vid`'s family, by vid.
    async fn family(&self, vid: u32) -> Result<HashMap<u32, VdiInfo>, ApiError> {
        let vdis = &self.sheep.vdis;
        let family = vdis.registry().meta(vid).map_or(vid, |m| m.family);
        let mut out = HashMap::new();
        for (member, _) in vdis.registry().family(family) {
            match vdis.info(member).await {
                Ok(Some(i)) => {
                    out.insert(member, i);
                }
                Ok(None) => {}
                Err(e) if e.is_no_object() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The answer describing the working VDI `name`.
    async fn vdi_answer(&self, name: &str) -> Result<Value, ApiError> {
        let info = self.sheep.vdis.info_by_name(name).await?;
        let all = self.family(info.vid).await?;
        let lock = self.sheep.vdis.ledger().lock(name);
        Ok(model::vdi_json(
            &info,
            &all,
            &lock.attachments,
            self.endpoint(),
        ))
    }

    /// Runs a change, idempotently if the request has a key.
    async fn change<F>(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        op: F,
    ) -> Response
    where
        F: std::future::Future<Output = Answer>,
    {
        let key = match idempotency::key(headers) {
            Ok(k) => k,
            Err(e) => return axum::response::IntoResponse::into_response(e),
        };
        let fp = idempotency::fingerprint(method.as_str(), uri.path(), body);
        self.inflight.run(&self.sheep.vdis, key, fp, op).await
    }
}

fn working(name: &str) -> VdiRef {
    VdiRef {
        name: name.to_string(),
        tag: String::new(),
        snapid: 0,
    }
}

/// The largest VDI with the cluster's object size.
fn max_size(api: &Api) -> u64 {
    let shift = api
        .sheep
        .format
        .config()
        .map_or(qemu_proto::consts::SD_DEFAULT_BLOCK_SIZE_SHIFT, |c| {
            c.block_size_shift
        });
    qemu_proto::inode::max_vdi_size(shift)
}

/// `GET /v1/vdis`: every working VDI with its snapshots and attachments.
pub async fn list(State(api): State<Api>) -> Result<axum::Json<Value>, ApiError> {
    let vdis = &api.sheep.vdis;
    let infos = vdis.list_vdis().await?;
    let all: HashMap<u32, VdiInfo> = infos.into_iter().map(|i| (i.vid, i)).collect();
    let mut working: Vec<&VdiInfo> = all
        .values()
        .filter(|i| !i.header.is_snapshot() && !vdis.is_snapshot(i.vid))
        .collect();
    working.sort_by(|a, b| a.header.name.cmp(&b.header.name));
    let list: Vec<Value> = working
        .into_iter()
        .map(|i| {
            let lock = vdis.ledger().lock(&i.header.name);
            model::vdi_json(i, &all, &lock.attachments, api.endpoint())
        })
        .collect();
    Ok(axum::Json(json!({ "vdis": list })))
}

/// `GET /v1/vdis/{name}`.
pub async fn show(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(api.vdi_answer(&name).await?))
}

/// `POST /v1/vdis`: a new, empty VDI.
pub async fn create(
    State(api): State<Api>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = async {
        let req: model::CreateVdi = model::parse(&body)?;
        model::check_name(&req.name)?;
        let size = model::parse_size(&req.size, max_size(&api))?;
        let copies = req.copies.unwrap_or(0);
        if req.copies.is_some() && !(1..=qemu_proto::consts::SD_MAX_COPIES).contains(&copies) {
            return Err(ApiError::bad_request(format!(
                "copies must be 1 to {}",
                qemu_proto::consts::SD_MAX_COPIES
            )));
        }
        api.sheep
            .vdis
            .new_vdi(NewVdi {
                name: req.name.clone(),
                size,
                copies,
                block_size_shift: 0,
                snapid: 0,
                base: 0,
            })
            .await?;
        Ok((StatusCode::CREATED, api.vdi_answer(&req.name).await?))
    };
    api.change(&method, &uri, &headers, &body, op).await
}

/// `DELETE /v1/vdis/{name}`: the working VDI (refused while attached);
/// its snapshots stay.
pub async fn remove(
    State(api): State<Api>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let op = async {
        let vid = api.sheep.vdis.delete(working(&name)).await?;
        Ok((StatusCode::OK, json!({"deleted": name, "vid": vid})))
    };
    api.change(&method, &uri, &headers, &[], op).await
}

/// `POST /v1/vdis/{name}/resize`: grow.
pub async fn resize(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let req: model::Resize = model::parse(&body)?;
    let size = model::parse_size(&req.size, u64::MAX)?;
    match api.sheep.vdis.resize(&name, size).await {
        Err(e) if e.result() == qemu_proto::SdResult::INVALID_PARMS => {
            let e = ApiError::from(e);
            Err(ApiError::new("bad_size", e.message))
        }
        other => other.map_err(ApiError::from),
    }?;
    Ok(axum::Json(api.vdi_answer(&name).await?))
}

/// `POST /v1/vdis/{name}/snapshots`: a tagged snapshot of the working VDI.
pub async fn snapshot(
    State(api): State<Api>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = async {
        let req: model::Snapshot = model::parse(&body)?;
        crate::vdi::check_tag(&req.tag).map_err(ApiError::bad_request)?;
        let (snap, _) = match api.sheep.vdis.snapshot(&name, &req.tag).await {
            Err(e) if e.result() == qemu_proto::SdResult::VDI_EXIST => {
                return Err(ApiError::new("snapshot_exists", ApiError::from(e).message))
            }
            other => other?,
        };
        let info = api
            .sheep
            .vdis
            .info(snap)
            .await?
            .ok_or_else(|| ApiError::new("no_snapshot", "the snapshot vanished"))?;
        Ok((
            StatusCode::CREATED,
            model::snapshot_json(&info, api.endpoint()),
        ))
    };
    api.change(&method, &uri, &headers, &body, op).await
}

/// `DELETE /v1/vdis/{name}/snapshots/{tag}`.
pub async fn remove_snapshot(
    State(api): State<Api>,
    Path((name, tag)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let op = async {
        let r = VdiRef {
            name: name.clone(),
            tag: tag.clone(),
            snapid: 0,
        };
        let vid = api.sheep.vdis.delete(r).await?;
        Ok((
            StatusCode::OK,
            json!({"deleted": name, "snapshot": tag, "vid": vid}),
        ))
    };
    api.change(&method, &uri, &headers, &[], op).await
}

/// `POST /v1/vdis/{name}/snapshots/{tag}/clones`: a new VDI sharing the
/// snapshot's objects.
pub async fn clone(
    State(api): State<Api>,
    Path((name, tag)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = async {
        let req: model::Clone = model::parse(&body)?;
        model::check_name(&req.name)?;
        let size = match &req.size {
            Some(v) => model::parse_size(v, max_size(&api))?,
            None => 0,
        };
        match api
            .sheep
            .vdis
            .clone_snapshot(&name, &tag, &req.name, size)
            .await
        {
            Err(e) if e.result() == qemu_proto::SdResult::INVALID_PARMS => {
                return Err(ApiError::new(
                    "bad_size",
                    format!("a clone cannot be smaller than its snapshot: {e}"),
                ))
            }
            other => other?,
        };
        Ok((StatusCode::CREATED, api.vdi_answer(&req.name).await?))
    };
    api.change(&method, &uri, &headers, &body, op).await
}

/// `GET /v1/vdis/{name}/attachments`.
pub async fn attachments(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    api.sheep.vdis.lookup(&working(&name)).await?;
    let lock = api.sheep.vdis.ledger().lock(&name);
    let list: Vec<Value> = lock
        .attachments
        .iter()
        .map(|a| model::attachment_json(&name, a))
        .collect();
    Ok(axum::Json(json!({ "attachments": list })))
}

/// `POST /v1/vdis/{name}/attachments`: attach on a host through this
/// sheep, read-write (the lock) or read-only, or as a live-migration
/// destination (`migrate_from`).
pub async fn attach(
    State(api): State<Api>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let op = async {
        let req: model::Attach = model::parse(&body)?;
        if req.host.is_empty() || req.host.len() > 255 || req.host.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "host must be 1 to 255 characters, without control characters",
            ));
        }
        let mode = match req.mode.as_deref() {
            None | Some("rw") => AttachMode::ReadWrite,
            Some("ro") => AttachMode::ReadOnly,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "mode must be \"rw\" or \"ro\", not {other:?}"
                )))
            }
        };
        let state = match req.migrate_from {
            Some(from) => AttachState::Pending { from },
            None => AttachState::Active,
        };
        let attachment = Attachment {
            id: new_attachment_id(),
            host: req.host,
            node: api.sheep.local.addr,
            nbd_port: api.sheep.client_ports().nbd,
            mode,
            state,
            since: crate::util::unix_now(),
        };
        let id = attachment.id.clone();
        let state = api
            .sheep
            .vdis
            .lock_op(LockOp::Attach {
                name: name.clone(),
                attachment,
            })
            .await?;
        let made = state
            .get(&id)
            .ok_or_else(|| ApiError::new("internal", "the attachment vanished"))?;
        Ok((StatusCode::CREATED, model::attachment_json(&name, made)))
    };
    api.change(&method, &uri, &headers, &body, op).await
}

/// `DELETE /v1/vdis/{name}/attachments/{id}`: detach; a pending migration
/// destination then holds the lock.
pub async fn detach(
    State(api): State<Api>,
    Path((name, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let op = async {
        let state = api
            .sheep
            .vdis
            .lock_op(LockOp::Detach {
                name: name.clone(),
                id: id.clone(),
            })
            .await?;
        let left: Vec<Value> = state
            .attachments
            .iter()
            .map(|a| model::attachment_json(&name, a))
            .collect();
        Ok((
            StatusCode::OK,
            json!({"detached": id, "vdi": name, "attachments": left}),
        ))
    };
    api.change(&method, &uri, &headers, &[], op).await
}
