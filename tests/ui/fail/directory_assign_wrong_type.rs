use tenancy_sea::{DirectoryCatalog, DirectoryRouter};

async fn assign(catalog: DirectoryCatalog<i64>, router: DirectoryRouter<i64>) {
    // In an `i64` application a `String` key does not compile: the catalog row and the
    // router would disagree about where tenant 42 lives.
    let _ = catalog.assign(&router, &"42".to_owned(), "s1").await;
}

fn main() {}
