//! A small probe run inside simulated hosts: prints the host's facts as the
//! agent gathers them (sysinfo), and is a TCP echo server and client for
//! reachability tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use serde::Serialize;

/// Longest line the echo server reads or the client accepts.
const MAX_LINE: u64 = 1024;
/// Connect, read and write timeout of the echo client and server.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Probe for simulated hosts: facts as the agent sees them, TCP echo"
)]
struct Args {
    #[command(subcommand)]
    command: Probe,
}

#[derive(Debug, Subcommand)]
enum Probe {
    /// Print `{"hostname": …, "interfaces": [{"name": …, "addresses": [ip/len, …]}]}`
    /// read with sysinfo (`System::host_name`, `Networks`), sorted.
    Facts,
    /// Listen on ADDR, print `listening on ADDR` once bound, and answer each
    /// connection's first line with `host=HOSTNAME peer=IP local=IP echo=LINE`.
    EchoServer {
        /// Address to listen on, e.g. `0.0.0.0:7000` or `[::]:0`.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Connect to ADDR, send MESSAGE as one line and print the reply line.
    Echo {
        /// The server, e.g. `198.18.4.1:7000` or `[fd12::1]:7000`.
        addr: SocketAddr,
        /// What to send (one line).
        message: String,
    },
}

/// What `facts` prints.
#[derive(Debug, Serialize)]
struct Facts {
    hostname: String,
    interfaces: Vec<InterfaceFacts>,
}

/// One interface, as sysinfo lists it.
#[derive(Debug, Serialize)]
struct InterfaceFacts {
    name: String,
    addresses: Vec<IpNet>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Probe::Facts => facts(),
        Probe::EchoServer { listen } => echo_server(listen),
        Probe::Echo { addr, message } => echo(addr, &message),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host-probe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn facts() -> anyhow::Result<()> {
    let hostname = sysinfo::System::host_name().context("sysinfo found no hostname")?;
    let networks = sysinfo::Networks::new_with_refreshed_list()
        .context("sysinfo could not list network interfaces")?;
    let mut interfaces: Vec<InterfaceFacts> = networks
        .iter()
        .map(|(name, data)| {
            let mut addresses: Vec<IpNet> = data
                .ip_networks()
                .iter()
                .filter_map(|n| IpNet::new(n.addr, n.prefix).ok())
                .collect();
            addresses.sort();
            addresses.dedup();
            InterfaceFacts {
                name: name.to_string_lossy().into_owned(),
                addresses,
            }
        })
        .collect();
    interfaces.sort_by(|a, b| a.name.cmp(&b.name));
    let out = serde_json::to_string(&Facts {
        hostname,
        interfaces,
    })?;
    println!("{out}");
    Ok(())
}

fn echo_server(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        std::thread::spawn(move || {
            if let Err(e) = answer(stream) {
                eprintln!("connection: {e:#}");
            }
        });
    }
    Ok(())
}

fn answer(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let peer = stream.peer_addr()?.ip().to_canonical();
    let local = stream.local_addr()?.ip().to_canonical();
    let host = sysinfo::System::host_name().unwrap_or_default();
    let line = read_line(&stream)?;
    let mut stream = stream;
    writeln!(stream, "host={host} peer={peer} local={local} echo={line}")?;
    Ok(())
}

fn echo(addr: SocketAddr, message: &str) -> anyhow::Result<()> {
    if message.contains('\n') {
        bail!("the message must be one line");
    }
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    writeln!(stream, "{message}")?;
    let reply = read_line(&stream)?;
    println!("{reply}");
    Ok(())
}

fn read_line(stream: &TcpStream) -> anyhow::Result<String> {
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE))
        .read_line(&mut line)
        .context("reading a line")?;
    match line.strip_suffix('\n') {
        Some(l) => Ok(l.to_owned()),
        None => bail!("no complete line within {MAX_LINE} bytes"),
    }
}
