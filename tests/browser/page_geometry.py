"""What a person at 1280x800 would see cut or overprinted, measured in the page (JavaScript).

Used by drive_lab.py after Run All (`page.evaluate(JS_GEOMETRY)`): for every Vega chart's SVG,
the visible text elements (non-empty, not hidden by Vega's labelOverlap, which sets opacity 0)
whose bounding boxes overlap another's by more than 1 px in both directions, or that reach
outside the SVG (a cut label); for every ipywidgets control, a part whose content is wider than
itself (scrollWidth > clientWidth + 1: "0." for "0.01", "temperat..."), a dropdown whose chosen
option does not fit, or a control reaching past its output area. The test turns each finding
into a failure that names the chart or control and both texts.
"""
from __future__ import annotations

JS_GEOMETRY = """
() => {
  // Everything a person could read in a chart: a text with characters, not hidden by Vega
  // (labelOverlap hides by opacity 0) or by CSS, and with an area.
  const visible = (el, svg) => {
    if (!el.textContent.trim()) return false;
    for (let n = el; n && n !== svg.parentNode; n = n.parentNode) {
      const s = getComputedStyle(n);
      if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0) return false;
      if (n.getAttribute && (n.getAttribute('opacity') === '0' || n.getAttribute('fill-opacity') === '0')) return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const role = el => {
    const g = el.closest('g[class*="role-"]');
    const cls = g ? Array.from(g.classList).filter(c => c.startsWith('role-')).join(' ') : '';
    const mark = el.closest('g[class*="mark-"]');
    const own = c => !c.startsWith('mark-') && !c.startsWith('role-');
    const name = mark ? Array.from(mark.classList).filter(own).join(' ') : '';
    return (cls + (name ? ' ' + name : '')).trim();
  };
  const round = r => ({x: Math.round(r.left), y: Math.round(r.top), w: Math.round(r.width), h: Math.round(r.height)});
  const charts = [];
  const outputs = Array.from(document.querySelectorAll('.jp-OutputArea-output'));
  document.querySelectorAll('.jp-OutputArea-output .vega-embed svg.marks').forEach((svg, index) => {
    const output = svg.closest('.jp-OutputArea-output');
    const cell = svg.closest('.jp-Cell');
    const cells = Array.from(document.querySelectorAll('.jp-Notebook .jp-Cell'));
    const titleEl = svg.querySelector('.role-title-text text');
    const name = `chart ${index} (cell ${cells.indexOf(cell)}${svg.closest('.widget-vbox') ? ', explorer' : ''}` +
                 `${titleEl ? ', "' + titleEl.textContent.trim().slice(0, 60) + '"' : ''})`;
    const box = svg.getBoundingClientRect();
    const texts = Array.from(svg.querySelectorAll('text')).filter(t => visible(t, svg))
      .map(t => ({text: t.textContent.trim(), role: role(t), rect: t.getBoundingClientRect()}));
    const overlaps = [], cut = [];
    const tol = 1;
    for (let i = 0; i < texts.length; i++) {
      const a = texts[i].rect;
      if (a.left < box.left - tol || a.right > box.right + tol || a.top < box.top - tol || a.bottom > box.bottom + tol)
        cut.push({text: texts[i].text, role: texts[i].role, box: round(a), svg: round(box)});
      for (let j = i + 1; j < texts.length; j++) {
        const b = texts[j].rect;
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > tol && h > tol)
          overlaps.push({a: texts[i].text, a_role: texts[i].role, b: texts[j].text, b_role: texts[j].role,
                         overlap_px: [Math.round(w), Math.round(h)], a_box: round(a), b_box: round(b)});
      }
    }
    const area = output.getBoundingClientRect();
    charts.push({name, texts: texts.length, overlaps, cut, svg: round(box),
                 wider_than_output: box.right > area.right + tol ? Math.round(box.right - area.right) : 0});
  });
  // Controls: a label, box or list whose content is wider than itself is clipped ("0.", "temperat...").
  const controls = [];
  const selector = '.widget-inline-hbox, .widget-inline-vbox, .widget-button, .widget-toggle-button';
  document.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').forEach(root => {
    if (!root.matches(selector)) return;
    const output = root.closest('.jp-OutputArea-output').getBoundingClientRect();
    const parts = [root, ...root.querySelectorAll('label, input, select, textarea, button, .widget-readout')];
    const label = (root.querySelector('label') || {}).textContent || root.textContent.trim().slice(0, 40);
    for (const el of parts) {
      if (el.getClientRects().length === 0) continue;
      const r = el.getBoundingClientRect();
      const problems = [];
      if (el.scrollWidth > el.clientWidth + 1)
        problems.push(`scrollWidth ${el.scrollWidth} > clientWidth ${el.clientWidth}`);
      if (el.tagName === 'SELECT' && !el.multiple && el.selectedIndex >= 0) {
        const ctx = document.createElement('canvas').getContext('2d');
        const s = getComputedStyle(el);
        ctx.font = `${s.fontStyle} ${s.fontWeight} ${s.fontSize} ${s.fontFamily}`;
        const need = ctx.measureText(el.options[el.selectedIndex].text).width
                     + parseFloat(s.paddingLeft) + parseFloat(s.paddingRight);
        if (need > el.clientWidth + 1) problems.push(`chosen option needs ${Math.round(need)} px > ${el.clientWidth}`);
      }
      if (r.right > output.right + 1) problems.push(`extends ${Math.round(r.right - output.right)} px past its output`);
      if (problems.length) controls.push({control: label.trim(), element: el.tagName.toLowerCase() +
        (el.className && typeof el.className === 'string' ? '.' + el.className.split(' ').slice(0, 2).join('.') : ''),
        text: (el.value !== undefined && el.tagName !== 'BUTTON' ? String(el.value) : el.textContent.trim())
              .slice(0, 60), problems});
    }
  });
  const checked = document.querySelectorAll('.jp-OutputArea-output .jupyter-widgets').length;
  return {charts, controls, controls_checked: checked};
}
"""
