use tenancy_sea::prelude::*;

#[derive(TenantScoped)]
pub enum Model {
    A,
    B,
}

fn main() {}
