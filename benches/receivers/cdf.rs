//! The latency picture (`benches/results/receivers-cdf.svg`): every participant's CDF, warm and
//! capped, new events and late duplicates.

use std::path::Path;

use plotters::prelude::*;

use crate::participants::{FUNCTIONS, Who};
use crate::{Pick, RunResult};

fn colour(who: Who) -> RGBColor {
    match who {
        Who::Ours => RGBColor(0xd9, 0x5f, 0x02),
        Who::Baseline => RGBColor(0x99, 0x44, 0x99),
        Who::SdkOnly => RGBColor(0xe7, 0x29, 0x8a),
        Who::Python => RGBColor(0x1f, 0x77, 0xb4),
        Who::Node => RGBColor(0x2c, 0xa0, 0x2c),
        Who::Go => RGBColor(0x00, 0xad, 0xd8),
        Who::Floor => RGBColor(0x55, 0x55, 0x55),
    }
}

/// Latency CDFs of every participant, all runs pooled: warm and capped, new events and late
/// duplicates, on a log time axis (the receivers differ by multiples, not milliseconds).
pub fn render(path: &Path, results: &[RunResult]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 860)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        "Stigg webhook receivers: latency per delivery (CDF, all runs), same moto, same Runtime API emulator",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 2));
    let passes: [(&str, Pick, bool); 4] = [
        ("warm, uncapped: new events", |r| Some(&r.warm), true),
        ("warm, uncapped: late duplicates", |r| Some(&r.warm), false),
        ("CPU capped to a 128 MB Lambda's share: new events", |r| r.capped.as_ref(), true),
        ("CPU capped to a 128 MB Lambda's share: late duplicates", |r| r.capped.as_ref(), false),
    ];
    for (area, (title, pick, new)) in panels.iter().zip(passes) {
        let mut series: Vec<(Who, Vec<f64>)> = Vec::new();
        for who in FUNCTIONS.into_iter().chain([Who::Floor]) {
            let mut v: Vec<f64> = results
                .iter()
                .filter_map(pick)
                .filter_map(|p| p.get(&who))
                .flat_map(|p| if new { &p.new } else { &p.dup }.lat.iter().map(|d| d.as_secs_f64() * 1e3))
                .collect();
            if v.is_empty() {
                continue;
            }
            v.sort_by(|a, b| a.total_cmp(b));
            series.push((who, v));
        }
        if series.is_empty() {
            area.draw(&Text::new(format!("{title}: not measured"), (20, 40), ("sans-serif", 16)))?;
            continue;
        }
        let lo = series.iter().map(|(_, v)| v[0]).fold(f64::MAX, f64::min).max(0.1) * 0.8;
        // The top 0.5 % is cut off the axis so one stall does not squash the rest.
        let hi = series.iter().map(|(_, v)| v[(v.len() * 995 / 1000).min(v.len() - 1)]).fold(0.0, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("latency, ms (log scale)")
            .y_desc("fraction of deliveries")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()?;
        for (who, v) in &series {
            let n = v.len() as f64;
            let step = (v.len() / 400).max(1);
            let points: Vec<(f64, f64)> = v
                .iter()
                .enumerate()
                .filter(|(i, _)| i % step == 0 || *i == v.len() - 1)
                .map(|(i, x)| (x.clamp(lo, hi), (i + 1) as f64 / n))
                .collect();
            let c = colour(*who);
            chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))?
                .label(format!("{} (p50 {:.1} ms)", who.label(), v[v.len() / 2]))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
