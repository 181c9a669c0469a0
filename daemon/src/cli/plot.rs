//! The learning-curve plot: reward against task-model evaluations, one line per series, as
//! SVG written whole or not at all.

use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

/// The reward axis: up to 1 from a tenth below the lowest point where every point lies in
/// [0, 1] (accuracy, F1), else the points' own range with a margin (the gap reward's ±200, a
/// weighted reward below 0).
fn y_range(series: &[(String, Vec<(f64, f64)>)]) -> std::ops::Range<f64> {
    let ys: Vec<f64> = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)).filter(|y| y.is_finite()).collect();
    let (low, high) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &y| (l.min(y), h.max(y)));
    if ys.is_empty() || (0.0..=1.0).contains(&low) && high <= 1.0 {
        let low = if ys.is_empty() { 0.0 } else { ((low - 0.05) * 10.0).floor() / 10.0 };
        return low.max(0.0)..1.0;
    }
    let margin = ((high - low) * 0.05).max(1e-3);
    low - margin..high + margin
}

/// Draws reward-vs-evaluations lines as SVG, written atomically: the backend's own file writer
/// drops errors on its final flush, so a full disk could have left a truncated plot reported
/// as written.
pub fn plot(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let svg = plot_svg(title, series)?;
    crate::files::write_atomic(path, svg.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// The plot's SVG text.
fn plot_svg(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<String> {
    let mut svg = String::new();
    draw_plot(&mut svg, title, series)?;
    Ok(svg)
}

fn draw_plot(svg: &mut String, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let x_max = series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)).fold(1.0f64, f64::max);
    let root = SVGBackend::with_string(svg, (900, 540)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Debug| anyhow::anyhow!("drawing the plot: {e:?}");
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max * 1.02, y_range(series))
        .map_err(|e| draw(&e))?;
    chart.configure_mesh().x_desc("task-model example evaluations").y_desc("reward").draw().map_err(|e| draw(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // Best-so-far curves are steps: hold each value until the next point.
        let mut steps = Vec::with_capacity(points.len() * 2);
        for (k, &(x, y)) in points.iter().enumerate() {
            if k > 0 {
                steps.push((x, points[k - 1].1));
            }
            steps.push((x, y));
        }
        chart
            .draw_series(LineSeries::new(steps, color.stroke_width(2)))
            .map_err(|e| draw(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reward_axis_holds_every_point() {
        let series = |points: Vec<(f64, f64)>| vec![("s".to_string(), points)];
        assert_eq!(y_range(&series(vec![(0.0, 0.5), (10.0, 0.9)])), 0.4..1.0);
        assert_eq!(y_range(&series(Vec::new())), 0.0..1.0);
        for points in [vec![(0.0, -0.5), (10.0, 150.0)], vec![(0.0, -0.2), (1.0, 0.4)], vec![(0.0, 0.5), (1.0, 1.3)]] {
            let range = y_range(&series(points.clone()));
            assert!(points.iter().all(|p| range.contains(&p.1)), "{points:?} in {range:?}");
        }
    }

    #[test]
    fn the_plot_is_written_whole_or_its_failure_is_reported() {
        let dir = std::env::temp_dir().join(format!("reprompt-plot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let series =
            vec![("ppo".to_string(), vec![(0.0, 0.5), (40.0, 0.75)]), ("random".to_string(), vec![(0.0, 0.5)])];
        let path = dir.join("curve.svg");
        plot(&path, "a title", &series).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.trim_start().starts_with("<svg") && text.trim_end().ends_with("</svg>"), "{text}");
        assert!(text.contains("a title") && text.contains("ppo") && text.contains("random"));
        assert_eq!(text, plot_svg("a title", &series).unwrap());
        // A place that cannot be written is an error, and nothing is left half written.
        let err = plot(&dir.join("missing").join("curve.svg"), "t", &series).unwrap_err();
        assert!(format!("{err:#}").contains("curve.svg"), "{err:#}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
