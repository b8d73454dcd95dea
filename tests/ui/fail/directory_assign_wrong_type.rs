use tenancy_sea::catalog::Directory;

async fn assign(catalog: Directory<i64>) {
    // In an `i64` application a `String` key does not compile: the catalog row and the
    // router would disagree about where tenant 42 lives.
    let _ = catalog.assign(&"42".to_owned(), "s1").await;
}

fn main() {}
