//! Operator opcodes of the Sheepdog front end: stopping a node
//! (KILL_NODE), recovery progress, counters and settings (STAT_RECOVERY,
//! GET/SET_RECOVERY, ENABLE/DISABLE_RECOVER, FORCE_RECOVER), vnodes
//! (SET/GET_VNODES) and replica checks (Sheepfold's CHECK_VDI). The work is
//! done by `Sheep`'s operator methods (`node/admin.rs`) and
//! `sheep.recovery`; this module only decodes, validates and encodes.
//!
//! `ops::dispatch` runs these after its protocol and status gates;
//! [`allowed_before_running`] lists the ones Sheepdog marks "force" (served
//! before the cluster runs). A KILL_NODE is answered first; the connection
//! writer then calls [`kills`] and stops the node once the reply is out.

use bytes::Bytes;
use qemu_proto::recovery::{
    CheckVdiReply, RecoveryState, RecoveryStats, RecoveryThrottling, StatRecoveryReply,
};
use qemu_proto::{flags, Opcode, SdRequest, SdResponse, SdResult};

use crate::error::SheepError;
use crate::node::{NodeStatus, Sheep};
use crate::recovery::Throttle;

/// True for the opcodes [`run`] serves.
pub fn handles(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::KillNode
            | Opcode::StatRecovery
            | Opcode::GetRecovery
            | Opcode::SetRecovery
            | Opcode::EnableRecover
            | Opcode::DisableRecover
            | Opcode::ForceRecover
            | Opcode::SetVnodes
            | Opcode::GetVnodes
            | Opcode::CheckVdi
    )
}

/// Operator opcodes served before the node runs: those of Sheepdog's
/// "force" list (KILL_NODE, FORCE_RECOVER, GET/SET_RECOVERY). The others
/// wait for the cluster like any request.
pub fn allowed_before_running(op: Opcode) -> bool {
    matches!(
        op,
        Opcode::KillNode | Opcode::ForceRecover | Opcode::GetRecovery | Opcode::SetRecovery
    )
}

/// True when `rsp` is a successful KILL_NODE answer: once it is written
/// the node must stop.
pub fn kills(rsp: &SdResponse) -> bool {
    rsp.opcode == Opcode::KillNode.as_u8() && rsp.result == SdResult::SUCCESS
}

/// Runs one of the opcodes [`handles`] accepts; the reply payload or the
/// error that becomes the result code.
pub async fn run(
    sheep: &Sheep,
    op: Opcode,
    req: &SdRequest,
    data: Bytes,
) -> Result<Bytes, SheepError> {
    match op {
        // Answered here; the writer stops the node after the reply.
        Opcode::KillNode => Ok(Bytes::new()),
        Opcode::StatRecovery => Ok(Bytes::from(stat_recovery(sheep).encode())),
        Opcode::GetRecovery => {
            let t = sheep.recovery.throttle();
            let wire = RecoveryThrottling::new(t.max, t.interval_ms);
            Ok(Bytes::copy_from_slice(&wire.encode()))
        }
        Opcode::SetRecovery => {
            let t = decode_throttle(req, &data)?;
            sheep.set_throttle_everywhere(t).await?;
            tracing::info!(
                max = t.max,
                interval_ms = t.interval_ms,
                "recovery throttle set"
            );
            Ok(Bytes::new())
        }
        Opcode::EnableRecover | Opcode::DisableRecover => {
            let enable = op == Opcode::EnableRecover;
            sheep.set_recovery_everywhere(enable).await?;
            tracing::info!(enable, "automatic recovery switched");
            Ok(Bytes::new())
        }
        Opcode::ForceRecover => Err(force_recover(sheep.status()).into()),
        Opcode::SetVnodes => {
            sheep.set_vnodes(decode_vnodes(req, &data)?).await?;
            Ok(Bytes::new())
        }
        Opcode::GetVnodes => Ok(Bytes::copy_from_slice(
            &i32::from(sheep.vnodes()).to_le_bytes(),
        )),
        Opcode::CheckVdi => {
            let report = sheep.check_vdi(req.vdi().base_vdi_id).await?;
            let reply = CheckVdiReply {
                objects: report.objects,
                fixed: report.fixed.iter().map(|oid| oid.0).collect(),
            }
            .encode();
            // The repairs are done either way; a short buffer must not
            // silently lose the list of what was fixed.
            if reply.len() > req.data_length as usize {
                return Err(SdResult::BUFFER_SMALL.into());
            }
            Ok(Bytes::from(reply))
        }
        _ => Err(SdResult::NO_SUPPORT.into()),
    }
}

/// The STAT_RECOVERY reply: Sheepdog's 24 bytes, then the counters.
fn stat_recovery(sheep: &Sheep) -> StatRecoveryReply {
    let s = sheep.recovery.status();
    let c = sheep.recovery.counters();
    StatRecoveryReply {
        state: RecoveryState {
            in_recovery: s.in_recovery,
            state: s.phase as u32,
            nr_finished: s.finished,
            nr_total: s.total,
        },
        stats: Some(RecoveryStats {
            objects_received: c.objects_received,
            bytes_received: c.bytes_received,
            bytes_sent: c.bytes_sent,
        }),
    }
}

/// SET_RECOVERY's payload: a `recovery_throttling` whose max and interval
/// are both zero or both non-zero (INVALID_PARMS otherwise).
fn decode_throttle(req: &SdRequest, data: &[u8]) -> Result<Throttle, SdResult> {
    if req.flags & flags::CMD_WRITE == 0 {
        return Err(SdResult::INVALID_PARMS);
    }
    let t = RecoveryThrottling::decode(data).map_err(|_| SdResult::INVALID_PARMS)?;
    if !t.is_valid() {
        return Err(SdResult::INVALID_PARMS);
    }
    Ok(Throttle {
        max: t.max_exec_count,
        interval_ms: t.queue_work_interval,
    })
}

/// SET_VNODES's int32 (Sheepdog's dog sends 8 bytes, the int first): 0 to
/// 65535, 0 draining the node.
fn decode_vnodes(req: &SdRequest, data: &[u8]) -> Result<u16, SdResult> {
    if req.flags & flags::CMD_WRITE == 0 {
        return Err(SdResult::INVALID_PARMS);
    }
    let bytes: [u8; 4] = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(SdResult::INVALID_PARMS)?;
    u16::try_from(i32::from_le_bytes(bytes)).map_err(|_| SdResult::INVALID_PARMS)
}

/// FORCE_RECOVER: Sheepdog accepts it only while the cluster waits for
/// nodes that will not come back. A running or halted (minority) node
/// refuses it with Sheepdog's FORCE_RECOVER ("Cluster is running/halted
/// and cannot be force recovered"); an unformatted one has nothing to
/// recover. Accepting the live nodes in place of a missing last epoch is
/// not implemented yet.
fn force_recover(status: NodeStatus) -> SdResult {
    match status {
        NodeStatus::Running | NodeStatus::Halted => SdResult::FORCE_RECOVER,
        NodeStatus::WaitForFormat => SdResult::WAIT_FOR_FORMAT,
        NodeStatus::WaitForJoin => SdResult::NO_SUPPORT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_req(op: Opcode) -> SdRequest {
        let mut r = SdRequest::new(op);
        r.flags = flags::CMD_WRITE;
        r
    }

    #[test]
    fn opcode_sets() {
        for op in qemu_proto::opcode::ALL_OPCODES {
            if allowed_before_running(op) {
                assert!(handles(op), "{op}");
            }
        }
        assert!(handles(Opcode::CheckVdi) && !allowed_before_running(Opcode::CheckVdi));
        assert!(!allowed_before_running(Opcode::StatRecovery));
        assert!(!allowed_before_running(Opcode::EnableRecover));
        assert!(!handles(Opcode::ReadObj));
    }

    #[test]
    fn kill_after_success_only() {
        let req = SdRequest::new(Opcode::KillNode);
        assert!(kills(&SdResponse::for_request(&req, SdResult::SUCCESS)));
        assert!(!kills(&SdResponse::for_request(&req, SdResult::HALT)));
        let other = SdRequest::new(Opcode::StatRecovery);
        assert!(!kills(&SdResponse::for_request(&other, SdResult::SUCCESS)));
    }

    #[test]
    fn throttle_payloads() {
        let req = write_req(Opcode::SetRecovery);
        let ok = RecoveryThrottling::new(4, 1000).encode();
        assert_eq!(
            decode_throttle(&req, &ok),
            Ok(Throttle {
                max: 4,
                interval_ms: 1000
            })
        );
        let off = RecoveryThrottling::new(0, 0).encode();
        assert_eq!(decode_throttle(&req, &off), Ok(Throttle::UNTHROTTLED));
        for bad in [RecoveryThrottling::new(0, 5), RecoveryThrottling::new(5, 0)] {
            assert_eq!(
                decode_throttle(&req, &bad.encode()),
                Err(SdResult::INVALID_PARMS)
            );
        }
        assert_eq!(
            decode_throttle(&req, &ok[..20]),
            Err(SdResult::INVALID_PARMS)
        );
        let read = SdRequest::new(Opcode::SetRecovery);
        assert_eq!(decode_throttle(&read, &ok), Err(SdResult::INVALID_PARMS));
    }

    #[test]
    fn vnodes_payloads() {
        let req = write_req(Opcode::SetVnodes);
        assert_eq!(decode_vnodes(&req, &128i32.to_le_bytes()), Ok(128));
        assert_eq!(decode_vnodes(&req, &0i32.to_le_bytes()), Ok(0));
        // Sheepdog's dog sends sizeof(int *) = 8 bytes.
        assert_eq!(decode_vnodes(&req, &[7, 0, 0, 0, 0xaa, 0xbb, 0, 0]), Ok(7));
        assert_eq!(
            decode_vnodes(&req, &65536i32.to_le_bytes()),
            Err(SdResult::INVALID_PARMS)
        );
        assert_eq!(
            decode_vnodes(&req, &(-1i32).to_le_bytes()),
            Err(SdResult::INVALID_PARMS)
        );
        assert_eq!(decode_vnodes(&req, &[1, 0]), Err(SdResult::INVALID_PARMS));
    }

    #[test]
    fn force_recover_answers() {
        assert_eq!(force_recover(NodeStatus::Running), SdResult::FORCE_RECOVER);
        assert_eq!(force_recover(NodeStatus::Halted), SdResult::FORCE_RECOVER);
        assert_eq!(
            force_recover(NodeStatus::WaitForFormat),
            SdResult::WAIT_FOR_FORMAT
        );
        assert_eq!(force_recover(NodeStatus::WaitForJoin), SdResult::NO_SUPPORT);
    }
}
