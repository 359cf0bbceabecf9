//! The `--svg` plot: latency over time (p50, p99, max per second), throughput and errors over
//! time, and the latency distribution by percentile, one above the other in one SVG file.

use plotters::{coord::Shift, prelude::*};

use super::{report::Summary, stats::Point};

const WIDTH: u32 = 1000;
const HEIGHT: u32 = 1050;
/// Log axes need a positive floor; nothing the shop answers is faster than this.
const FLOOR_MS: f64 = 0.01;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
/// Which value of a second a line shows.
type Value = fn(&Point) -> f64;

/// The plot as SVG text.
pub(crate) fn svg(summary: &Summary) -> Result<String, String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        // The model is in the first chart's caption: one line of title would not hold both.
        let title = format!("shop load: {} over {}", summary.scenario, summary.target);
        let root = root
            .titled(&title, ("sans-serif", 16))
            .map_err(|e| e.to_string())?;
        let panels = root.split_evenly((3, 1));
        latency_over_time(&panels[0], summary).map_err(|e| e.to_string())?;
        throughput_over_time(&panels[1], summary).map_err(|e| e.to_string())?;
        distribution(&panels[2], summary).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(text)
}

type Drawn = Result<(), DrawingAreaErrorKind<<SVGBackend<'static> as DrawingBackend>::ErrorType>>;

fn ceiling(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(1.0, f64::max) * 1.5
}

fn seconds(summary: &Summary) -> f64 {
    summary
        .timeline
        .last()
        .map_or(1.0, |p| p.t_s)
        .max(summary.elapsed_s)
        .max(1.0)
}

fn latency_over_time(area: &Area<'_>, summary: &Summary) -> Drawn {
    let timeline = &summary.timeline;
    let top = ceiling(timeline.iter().map(|p| p.max_ms));
    let caption = format!(
        "Latency over time, from due time ({})",
        model_words(&summary.model)
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 14))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds(summary), (FLOOR_MS..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("latency (ms, log)")
        .draw()?;
    let lines: [(&str, RGBColor, Value); 3] = [
        ("p50", BLUE, |p| p.p50_ms),
        ("p99", RED, |p| p.p99_ms),
        ("max", BLACK, |p| p.max_ms),
    ];
    for (name, colour, value) in lines {
        let points = timeline
            .iter()
            .filter(|p| p.requests > 0)
            .map(|p| (p.t_s, value(p).max(FLOOR_MS)));
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

fn throughput_over_time(area: &Area<'_>, summary: &Summary) -> Drawn {
    let timeline = &summary.timeline;
    let top = ceiling(timeline.iter().map(|p| p.rps));
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput and errors (per second)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..seconds(summary), 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("per second")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|p| (p.t_s, p.rps)),
            GREEN.stroke_width(2),
        ))?
        .label("answered requests/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREEN));
    chart
        .draw_series(LineSeries::new(
            timeline.iter().map(|p| (p.t_s, p.errors as f64)),
            RED.stroke_width(2),
        ))?
        .label("errors/s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// The model without its seed and limit, short enough for a caption.
fn model_words(model: &str) -> &str {
    model.split(", at most").next().unwrap_or(model)
}

/// `x` nines as a percentile label: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%.
fn percentile_label(nines: &f64) -> String {
    let percent = 100.0 * (1.0 - 10f64.powf(-nines));
    let text = format!("{percent:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn distribution(area: &Area<'_>, summary: &Summary) -> Drawn {
    // The x axis counts nines: the tail, where the trouble is, gets most of the room. The
    // maximum goes where the sample count stops resolving (one in `count`), not at infinity.
    let resolved = (summary.overall.count.max(1) as f64).log10();
    let nines = |percentile: f64| (-(1.0 - percentile / 100.0).max(1e-12).log10()).min(resolved);
    let points: Vec<(f64, f64)> = summary
        .distribution
        .iter()
        .map(|p| (nines(p.percentile), p.latency_ms.max(FLOOR_MS)))
        .collect();
    let right = points.iter().map(|p| p.0).fold(1.0, f64::max).ceil();
    let top = ceiling(points.iter().map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption("Latency by percentile (all requests)", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..right, (FLOOR_MS..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms, log)")
        .x_labels(right as usize + 1)
        .x_label_formatter(&percentile_label)
        .draw()?;
    chart.draw_series(LineSeries::new(points, MAGENTA.stroke_width(2)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_percentile_axis_counts_nines() {
        assert_eq!(percentile_label(&0.0), "0%");
        assert_eq!(percentile_label(&1.0), "90%");
        assert_eq!(percentile_label(&2.0), "99%");
        assert_eq!(percentile_label(&3.0), "99.9%");
    }
}
