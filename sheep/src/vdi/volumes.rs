//! [`Volumes`]: the node's catalog of open volumes, one [`Volume`] per VDI,
//! shared by every connection to it (so two connections never both allocate
//! the same object), and the export catalog the front ends open them from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::volume::Volume;
use super::{VdiRef, VdiService};
use crate::cluster::BoxFuture;
use crate::error::SheepError;
use crate::frontend::export::{BlockExport, ExportCatalog};
use crate::gateway::Gateway;

/// The node's open volumes, by vid, shared by all their connections.
pub struct Volumes {
    vdis: Arc<VdiService>,
    gateway: Arc<Gateway>,
    open: Mutex<HashMap<(String, String, u32), Weak<Volume>>>,
    opening: tokio::sync::Mutex<()>,
}

impl Volumes {
    /// An empty catalog.
    pub fn new(vdis: Arc<VdiService>, gateway: Arc<Gateway>) -> Self {
        Volumes {
            vdis,
            gateway,
            open: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Opens a VDI by export name: `NAME`, `NAME@TAG` or `NAME@SNAPID`.
    pub async fn open_volume(&self, export: &str) -> Result<Arc<Volume>, SheepError> {
        let export = match export.rsplit_once('@') {
            Some((name, snap)) => match snap.parse::<u32>() {
                Ok(id) => VdiRef {
                    name: name.into(),
                    tag: String::new(),
                    snapid: id,
                },
                Err(_) => VdiRef {
                    name: name.into(),
                    tag: snap.into(),
                    snapid: 0,
                },
            },
            None => VdiRef {
                name: export.into(),
                tag: String::new(),
                snapid: 0,
            },
        };
        let key = (export.name.clone(), export.tag.clone(), export.snapid);
        // One opener at a time, so two connections racing to open the same
        // VDI end up sharing one volume.
        let _one = self.opening.lock().await;
        if let Some(v) = self
            .open
            .lock()
            .expect("volumes lock")
            .get(&key)
            .and_then(Weak::upgrade)
        {
            return Ok(v);
        }
        let volume = Arc::new(Volume::open(self.vdis.clone(), self.gateway.clone(), export).await?);
        let mut open = self.open.lock().expect("volumes lock");
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(key, Arc::downgrade(&volume));
        Ok(volume)
    }

    /// The volume open on this node for the working VDI `name`, if any.
    pub fn find(&self, name: &str) -> Option<Arc<Volume>> {
        self.open
            .lock()
            .expect("volumes lock")
            .get(&(name.to_string(), String::new(), 0))
            .and_then(Weak::upgrade)
    }

    /// The VDI layer these volumes serve.
    pub fn vdis(&self) -> &Arc<VdiService> {
        &self.vdis
    }

    /// Names of the working (non-snapshot) VDIs.
    pub async fn names(&self) -> Result<Vec<String>, SheepError> {
        let mut names = Vec::new();
        for vid in self.vdis.registry().live_vids() {
            match self.vdis.read_header(vid).await {
                Ok(h) if !h.is_snapshot() && !h.is_deleted() => names.push(h.name),
                Ok(_) => {}
                Err(e) if e.is_no_object() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(names)
    }
}

impl ExportCatalog for Volumes {
    fn open(&self, name: &str) -> BoxFuture<'_, Result<Arc<dyn BlockExport>, SheepError>> {
        let name = name.to_string();
        Box::pin(async move {
            let v: Arc<dyn BlockExport> = self.open_volume(&name).await?;
            Ok(v)
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<String>, SheepError>> {
        Box::pin(self.names())
    }
}
