//! Running many small request/reply tasks over one connection, in order.
//!
//! `vdi read`, `vdi write` and `vdi list` walk objects one by one; each walk
//! step is a [`Task`] that issues at most one request at a time (possibly a
//! few in sequence). [`run_ordered`] keeps up to `window` tasks in flight on
//! one [`Connection`], feeds each reply to the task that sent it, and hands
//! the finished outputs to a callback strictly in task order.

use std::collections::{HashMap, VecDeque};

use qemu_proto::SdRequest;

use crate::client::{Connection, Reply};
use crate::error::DogError;

/// Objects kept in flight by the data commands.
pub const DEFAULT_WINDOW: usize = 8;

/// What a task wants next.
#[derive(Debug)]
pub enum Step<T> {
    /// Send this request (header and payload) and call `step` with its reply.
    Send(SdRequest, Vec<u8>),
    /// The task is finished with this output.
    Done(T),
}

/// One unit of pipelined work.
pub trait Task {
    /// What the task produces.
    type Output;
    /// Called with `None` to start, then with the reply to each request sent.
    fn step(&mut self, reply: Option<Reply>) -> Result<Step<Self::Output>, DogError>;
}

enum Slot<T: Task> {
    Running(T),
    Finished(T::Output),
}

/// Runs tasks from `next_task` (which returns `Ok(None)` when there are no
/// more) with at most `window` of them in flight, and calls `finish` on each
/// output in the order the tasks were produced. Stops at the first error.
pub fn run_ordered<T, N, F>(
    conn: &mut Connection,
    window: usize,
    mut next_task: N,
    mut finish: F,
) -> Result<(), DogError>
where
    T: Task,
    N: FnMut() -> Result<Option<T>, DogError>,
    F: FnMut(T::Output) -> Result<(), DogError>,
{
    let window = window.max(1);
    let mut slots: VecDeque<Slot<T>> = VecDeque::new();
    // Sequence number of slots[0]; request id -> sequence number.
    let mut base: u64 = 0;
    let mut by_id: HashMap<u32, u64> = HashMap::new();
    let mut exhausted = false;

    loop {
        while !exhausted && slots.len() < window {
            match next_task()? {
                None => exhausted = true,
                Some(mut task) => {
                    let seq = base + slots.len() as u64;
                    let slot = advance(conn, &mut task, None, seq, &mut by_id)?;
                    slots.push_back(slot.unwrap_or(Slot::Running(task)));
                }
            }
        }
        while matches!(slots.front(), Some(Slot::Finished(_))) {
            if let Some(Slot::Finished(out)) = slots.pop_front() {
                base += 1;
                finish(out)?;
            }
        }
        if slots.is_empty() {
            if exhausted {
                return Ok(());
            }
            continue;
        }
        let reply = conn.recv()?;
        let seq = by_id
            .remove(&reply.rsp.id)
            .ok_or_else(|| DogError::sysfail(format!("unexpected response id {}", reply.rsp.id)))?;
        let idx = (seq - base) as usize;
        if let Some(Slot::Running(task)) = slots.get_mut(idx) {
            if let Some(done) = advance(conn, task, Some(reply), seq, &mut by_id)? {
                slots[idx] = done;
            }
        }
    }
}

/// Steps `task`; sends its request (recording the id) or returns the
/// finished slot.
fn advance<T: Task>(
    conn: &mut Connection,
    task: &mut T,
    reply: Option<Reply>,
    seq: u64,
    by_id: &mut HashMap<u32, u64>,
) -> Result<Option<Slot<T>>, DogError> {
    match task.step(reply)? {
        Step::Send(req, data) => {
            let id = conn.send(req, &data)?;
            by_id.insert(id, seq);
            Ok(None)
        }
        Step::Done(out) => Ok(Some(Slot::Finished(out))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu_proto::{Opcode, SdResponse, SdResult};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    /// A task that reads twice (two sequential requests) and reports the sum
    /// of the first payload bytes, or finishes at once when `n` is 0.
    struct TwoReads {
        n: u32,
        sum: u32,
        replies: u32,
    }

    impl Task for TwoReads {
        type Output = (u32, u32);
        fn step(&mut self, reply: Option<Reply>) -> Result<Step<(u32, u32)>, DogError> {
            if self.n == 0 {
                return Ok(Step::Done((0, 0)));
            }
            if let Some(r) = reply {
                self.sum += u32::from(r.data[0]);
                self.replies += 1;
            }
            if self.replies == 2 {
                return Ok(Step::Done((self.n, self.sum)));
            }
            let mut req = SdRequest::new(Opcode::ReadObj);
            req.data_length = 1;
            let mut obj = req.obj();
            obj.offset = u64::from(self.n);
            req.set_obj(&obj);
            Ok(Step::Send(req, Vec::new()))
        }
    }

    #[test]
    fn outputs_come_in_task_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Replies with the request's offset as the single payload byte.
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut answered = 0;
            while answered < 2 * 9 {
                let mut h = [0u8; 48];
                if s.read_exact(&mut h).is_err() {
                    break;
                }
                let req = SdRequest::from_bytes(&h);
                let mut rsp = SdResponse::for_request(&req, SdResult::SUCCESS);
                rsp.data_length = 1;
                s.write_all(&rsp.to_bytes()).unwrap();
                s.write_all(&[req.obj().offset as u8]).unwrap();
                answered += 1;
            }
        });
        let mut conn = Connection::connect("127.0.0.1".parse().unwrap(), port).unwrap();
        let mut n = 0u32;
        let mut outs = Vec::new();
        run_ordered(
            &mut conn,
            3,
            || {
                n += 1;
                Ok((n <= 12).then_some(TwoReads {
                    n: if n == 4 || n == 8 || n == 12 { 0 } else { n },
                    sum: 0,
                    replies: 0,
                }))
            },
            |o| {
                outs.push(o);
                Ok(())
            },
        )
        .unwrap();
        let expect: Vec<(u32, u32)> = (1..=12)
            .map(|i| {
                if i == 4 || i == 8 || i == 12 {
                    (0, 0)
                } else {
                    (i, 2 * i)
                }
            })
            .collect();
        assert_eq!(outs, expect);
        server.join().unwrap();
    }
}
