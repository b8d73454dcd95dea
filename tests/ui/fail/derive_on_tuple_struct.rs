use tenancy_sea::prelude::*;

#[derive(TenantScoped)]
pub struct Model(i64, i64);

fn main() {}
