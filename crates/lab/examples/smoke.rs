fn main() {
    let path = std::env::args().nth(1).expect("scenario");
    let sets: Vec<String> = std::env::args().skip(2).collect();
    let t = std::time::Instant::now();
    let l = ballast_lab::scenario::load(std::path::Path::new(&path), &sets).unwrap_or_else(|e| panic!("{e}"));
    let s = ballast_lab::sim::setup(l, 1).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("setup {:?}", t.elapsed());
    let (r, d) = s.run_path(0, true, None);
    eprintln!("run {:?}", t.elapsed());
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    println!("notes {:?}", d.unwrap().notes);
}
