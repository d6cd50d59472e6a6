//! A `#[ray::main]` returning an `ExitCode`, in sync mode.

#[ray::main(config = ray::Config::sync())]
fn main() -> std::process::ExitCode {
    let r = ray::put(&7u8).unwrap();
    if ray::get(&r).unwrap() == 7 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
