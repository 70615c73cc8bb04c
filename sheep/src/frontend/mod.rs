//! Front ends: how clients reach a sheep.
//!
//! The data port speaks the Sheepdog protocol to clients (dog, QEMU) and the
//! peer protocol to other sheep; [`listener`] tells them apart by the first
//! bytes of a connection.

pub mod attach;
pub mod export;
pub mod http;
pub mod listener;
pub mod nbd;
pub mod sheepdog;
