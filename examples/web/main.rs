//! A multi-tenant web service: the quickstart's customers and orders behind axum, each
//! request's tenant named by its `X-Tenant-Id` header.
//!
//! ```text
//! cargo run --example web                       # SQLite in memory, on 127.0.0.1:3000
//! BIND=0.0.0.0:8080 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --example web
//! cargo run --example web -- --self-test        # serve on a free port, check it, exit
//!
//! curl -H 'X-Tenant-Id: 1' -H 'Content-Type: application/json' -d '{"name":"Ada"}' http://127.0.0.1:3000/customers
//! curl -H 'X-Tenant-Id: 1' http://127.0.0.1:3000/customers
//! ```
#![allow(clippy::print_stdout)] // an example's job is to print what happens

mod app;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Schema};
use std::net::SocketAddr;
use tenancy_sea::Tenancy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Fresh tables for the example (the quickstart's names, so it is safe on a shared
/// database that the quickstart uses too).
async fn create_tables(conn: &DatabaseConnection) -> Result<(), BoxError> {
    let schema = Schema::new(conn.get_database_backend());
    for table in ["quickstart_orders", "quickstart_customers"] {
        conn.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
            .await?;
    }
    conn.execute(&schema.create_table_from_entity(app::customer::Entity))
        .await?;
    conn.execute(&schema.create_table_from_entity(app::order::Entity))
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Refused and failed requests are logged (with the full error) at `warn`.
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".to_owned());
    let conn = Database::connect(&url).await?;
    create_tables(&conn).await?;
    let tenancy: Tenancy<i64> = Tenancy::builder(conn).build()?;
    let router = app::router(tenancy);

    let self_test = std::env::args().any(|arg| arg == "--self-test");
    let bind = match std::env::var("BIND") {
        Ok(bind) if !self_test => bind,
        _ if self_test => "127.0.0.1:0".to_owned(),
        _ => "127.0.0.1:3000".to_owned(),
    };
    let listener = TcpListener::bind(&bind).await?;
    let address = listener.local_addr()?;
    println!("listening on http://{address} (tenant in the X-Tenant-Id header)");
    if !self_test {
        axum::serve(listener, router).await?;
        return Ok(());
    }
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let outcome = self_test_against(address).await;
    server.abort();
    outcome?;
    println!("self-test passed");
    Ok(())
}

/// A few requests against the running service, through a socket, as curl would send them.
async fn self_test_against(address: SocketAddr) -> Result<(), BoxError> {
    let (status, ada) = request(address, "POST", "/customers", "1", r#"{"name":"Ada"}"#).await?;
    expect(status == 201, format!("creating Ada: {status} {ada}"))?;
    let (status, grace) =
        request(address, "POST", "/customers", "2", r#"{"name":"Grace"}"#).await?;
    expect(status == 201, format!("creating Grace: {status} {grace}"))?;
    let grace: serde_json::Value = serde_json::from_str(&grace)?;

    let (status, list) = request(address, "GET", "/customers", "1", "").await?;
    println!("tenant 1's customers: {list}");
    expect(
        status == 200 && list.contains("Ada") && !list.contains("Grace"),
        format!("tenant 1 sees only Ada: {status} {list}"),
    )?;
    let path = format!("/customers/{}", grace["id"]);
    let (status, _) = request(address, "GET", &path, "1", "").await?;
    println!("tenant 1 reads tenant 2's customer: {status}");
    expect(status == 404, "another tenant's row is not found")?;
    let (status, body) = request(address, "GET", "/customers", "01", "").await?;
    println!("a look-alike tenant id 01: {status} {body:?}");
    expect(status == 400, "a look-alike id is refused")?;
    let (status, body) = request(address, "GET", "/summary", "2", "").await?;
    println!("tenant 2's summary, counted by a background task: {body}");
    expect(
        status == 200 && body.contains(r#""tenant":2"#),
        "the background task keeps the request's tenant",
    )?;
    Ok(())
}

fn expect(ok: bool, what: impl Into<String>) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {}", what.into()).into())
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    tenant: &str,
    body: &str,
) -> Result<(u16, String), BoxError> {
    let mut stream = TcpStream::connect(address).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nX-Tenant-Id: {tenant}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or("no status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
