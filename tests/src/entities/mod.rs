//! The entities the suite runs on: a small shop with tenant-scoped customers and orders,
//! a global plans table, a many-to-many tag link, and one entity per tenant id type.

#![allow(missing_docs)] // fixtures: the module docs say what each one is for

pub mod account;
pub mod customer;
pub mod event;
pub mod note_i32;
pub mod note_string;
pub mod note_uuid;
pub mod order;
pub mod order_tag;
pub mod plan;
pub mod tag;
pub mod ticket;
