//! A connection to one sheep over the Sheepdog protocol.
//!
//! Owns the TCP socket, request ids and framing (`lib/net.c` exec_req): a
//! request is a 48-byte header plus `data_length` payload bytes when it has
//! the WRITE flag; a reply is a 48-byte header plus `rsp.data_length` bytes.
//! Several requests may be in flight; replies come back in completion order
//! and are matched by id. [`Connection::exec`] is the one-at-a-time helper,
//! [`Connection::send`] / [`Connection::recv`] the pipelined pair.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use qemu_proto::flags::{CMD_PIGGYBACK, CMD_WRITE};
use qemu_proto::{Opcode, SdRequest, SdResponse};

use crate::error::{strerror, DogError};

/// One reply: the response header and its payload.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The 48-byte response header.
    pub rsp: SdResponse,
    /// `rsp.data_length` payload bytes.
    pub data: Vec<u8>,
}

/// A TCP connection to a sheep.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    next_id: u32,
    /// Requests in flight: id -> the most payload bytes the reply may carry.
    inflight: HashMap<u32, u32>,
}

/// Formats an address as Sheepdog's `addr_to_str` (IPv6 without brackets).
pub fn addr_string(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.to_string(),
    }
}

/// A fresh request header for `op` (protocol version set from the opcode).
pub fn request(op: Opcode) -> SdRequest {
    SdRequest::new(op)
}

impl Connection {
    /// Connects to `addr:port`. On failure the error reads
    /// `failed to connect to ADDR:PORT: <strerror>` (exit code 2).
    pub fn connect(addr: IpAddr, port: u16) -> Result<Self, DogError> {
        let stream =
            TcpStream::connect(SocketAddr::new(addr, port)).map_err(|e| DogError::Connect {
                addr: addr_string(addr),
                port,
                reason: strerror(&e),
            })?;
        // Small requests must leave at once; a failure here only costs latency.
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            next_id: 1,
            inflight: HashMap::new(),
        })
    }

    /// Number of requests sent whose reply has not been received yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Sends one request with a fresh id and returns that id.
    ///
    /// With the WRITE flag, `data` is the payload and `data_length` is set to
    /// its length; otherwise `data` must be empty and `req.data_length` is the
    /// largest reply payload accepted.
    pub fn send(&mut self, mut req: SdRequest, data: &[u8]) -> Result<u32, DogError> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        req.id = id;
        let write = req.flags & CMD_WRITE != 0;
        let max_reply = if write {
            req.data_length = u32::try_from(data.len())
                .map_err(|_| DogError::failure("request payload is too large"))?;
            if req.flags & CMD_PIGGYBACK != 0 {
                req.data_length
            } else {
                0
            }
        } else {
            req.data_length
        };
        let header = req.to_bytes();
        let result = if write && data.len() <= 64 * 1024 {
            let mut buf = Vec::with_capacity(header.len() + data.len());
            buf.extend_from_slice(&header);
            buf.extend_from_slice(data);
            self.stream.write_all(&buf)
        } else {
            let mut r = self.stream.write_all(&header);
            if r.is_ok() && write {
                r = self.stream.write_all(data);
            }
            r
        };
        result.map_err(|e| {
            DogError::sysfail(format!(
                "failed to send request {:x}, {}: {}",
                req.opcode,
                if write { data.len() } else { 0 },
                strerror(&e)
            ))
        })?;
        self.inflight.insert(id, max_reply);
        Ok(id)
    }

    /// Receives the next reply, whichever request it answers.
    pub fn recv(&mut self) -> Result<Reply, DogError> {
        let mut header = [0u8; 48];
        read_full(&mut self.stream, &mut header)
            .map_err(|e| read_error(e, "failed to read a response"))?;
        let rsp = SdResponse::from_bytes(&header);
        let Some(max) = self.inflight.remove(&rsp.id) else {
            return Err(DogError::sysfail(format!(
                "unexpected response id {} (opcode {:x})",
                rsp.id, rsp.opcode
            )));
        };
        if rsp.data_length > max {
            return Err(DogError::sysfail(format!(
                "response {} carries {} bytes, at most {} expected",
                rsp.id, rsp.data_length, max
            )));
        }
        let mut data = vec![0u8; rsp.data_length as usize];
        read_full(&mut self.stream, &mut data)
            .map_err(|e| read_error(e, "failed to read the response data"))?;
        Ok(Reply { rsp, data })
    }

    /// Sends one request and waits for its reply. Nothing else may be in flight.
    pub fn exec(&mut self, req: SdRequest, data: &[u8]) -> Result<Reply, DogError> {
        debug_assert_eq!(self.in_flight(), 0, "exec with requests in flight");
        self.send(req, data)?;
        self.recv()
    }
}

/// Reads exactly `buf.len()` bytes; a clean EOF is `UnexpectedEof`.
fn read_full(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match stream.read(&mut buf[done..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sheepdog prints the socket error (not for a closed connection) and then
/// what it was reading.
fn read_error(e: io::Error, what: &str) -> DogError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        DogError::sysfail(what)
    } else {
        DogError::sysfail(format!(
            "failed to read from socket: -1, {}\n{what}",
            strerror(&e)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qemu_proto::SdResult;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn addr_strings() {
        assert_eq!(addr_string("127.0.0.1".parse().unwrap()), "127.0.0.1");
        assert_eq!(addr_string("::1".parse().unwrap()), "::1");
        assert_eq!(
            addr_string("::ffff:10.0.0.1".parse().unwrap()),
            "::ffff:10.0.0.1"
        );
    }

    #[test]
    fn connect_refused_message() {
        // Bind and drop to get a port nobody listens on.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Connection::connect("127.0.0.1".parse().unwrap(), port).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("failed to connect to 127.0.0.1:{port}: Connection refused")
        );
        assert_eq!(err.code(), 2);
    }

    /// A fake sheep answering requests in reverse order, echoing the ids.
    #[test]
    fn pipelined_replies_are_matched_by_id() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut reqs = Vec::new();
            for _ in 0..3 {
                let mut h = [0u8; 48];
                s.read_exact(&mut h).unwrap();
                let req = SdRequest::from_bytes(&h);
                if req.flags & CMD_WRITE != 0 {
                    let mut d = vec![0u8; req.data_length as usize];
                    s.read_exact(&mut d).unwrap();
                }
                reqs.push(req);
            }
            for req in reqs.iter().rev() {
                let mut rsp = SdResponse::for_request(req, SdResult::SUCCESS);
                let payload = if req.flags & CMD_WRITE != 0 {
                    Vec::new()
                } else {
                    vec![req.id as u8; req.data_length as usize]
                };
                rsp.data_length = payload.len() as u32;
                s.write_all(&rsp.to_bytes()).unwrap();
                s.write_all(&payload).unwrap();
            }
        });
        let mut c = Connection::connect("127.0.0.1".parse().unwrap(), port).unwrap();
        let mut r = request(Opcode::ReadObj);
        r.data_length = 5;
        let a = c.send(r, &[]).unwrap();
        let mut w = request(Opcode::WriteObj);
        w.flags = CMD_WRITE;
        let b = c.send(w, &[1, 2, 3]).unwrap();
        let d = c.send(r, &[]).unwrap();
        assert_eq!(c.in_flight(), 3);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let reply = c.recv().unwrap();
            if reply.rsp.id == b {
                assert!(reply.data.is_empty());
            } else {
                assert_eq!(reply.data, vec![reply.rsp.id as u8; 5]);
            }
            seen.push(reply.rsp.id);
        }
        assert_eq!(seen, vec![d, b, a]);
        assert_eq!(c.in_flight(), 0);
        server.join().unwrap();
    }
}
