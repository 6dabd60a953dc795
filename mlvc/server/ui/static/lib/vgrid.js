// A virtual grid: only the rows and columns in view are in the DOM, so 100,000 runs by
// 1,000 columns scroll as fast as 30 by 10. Rows come from `rowAt(i)` (null while loading).
import { el } from './dom.js';

export const ROW = 28;

export class VirtualGrid {
  /**
   * @param {HTMLElement} root  where the grid goes
   * @param {object} opts  {columns: [{key, label, width, num, cell(value, i) -> Node|string}],
   *   count, itemAt(i) -> {kind: 'row', index} | {kind: 'group', label}, rowAt(index),
   *   onHeader(column, event), onRange(firstIndex, lastIndex), rowClass(index)}
   */
  constructor(root, opts) {
    this.opts = opts;
    this.head = el('div', { class: 'vt-head' });
    this.body = el('div', { class: 'vt-body' });
    this.box = el('div', { class: 'vt', tabindex: 0, role: 'grid' }, this.head, this.body);
    root.append(this.box);
    this.frame = 0;
    this.drawn = new Map();  // position -> {node, key, values, cls}
    this.box.addEventListener('scroll', () => this.schedule(), { passive: true });
    this.resize = new ResizeObserver(() => this.schedule());
    this.resize.observe(this.box);
    this.setColumns(opts.columns);
    this.setCount(opts.count || 0);
  }

  setColumns(columns) {
    this.columns = columns;
    let left = 0;
    this.lefts = columns.map((c) => { const l = left; left += c.width; return l; });
    this.width = left;
    this.head.style.width = `${left}px`;
    this.body.style.width = `${left}px`;
    this.headerKey = null;
    this.clear();
    this.schedule();
  }

  /** Draw every row again (their data or selection changed). */
  clear() {
    for (const old of this.drawn.values()) old.node.remove();
    this.drawn = new Map();
  }

  setCount(count) {
    this.count = count;
    this.body.style.height = `${count * ROW}px`;
    this.clear();
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  visibleColumns() {
    const x0 = this.box.scrollLeft - 200;
    const x1 = this.box.scrollLeft + this.box.clientWidth + 200;
    const out = [];
    for (let i = 0; i < this.columns.length; i += 1) {
      const l = this.lefts[i];
      if (l + this.columns[i].width >= x0 && l <= x1) out.push(i);
      else if (l > x1) break;
    }
    return out;
  }

  draw() {
    const cols = this.visibleColumns();
    const key = cols.join(',');
    if (key !== this.headerKey) {
      this.headerKey = key;
      this.head.replaceChildren(...cols.map((ci) => {
        const c = this.columns[ci];
        return el('div', {
          class: `vt-cell${c.num ? ' num' : ''}${c.sorted ? ` sorted${c.sorted === 'desc' ? ' desc' : ''}` : ''}`,
          style: { left: `${this.lefts[ci]}px`, width: `${c.width}px` },
          title: c.title || c.label, role: 'columnheader', dataset: { key: c.key },
          onclick: (e) => this.opts.onHeader && this.opts.onHeader(c, e),
        }, c.label);
      }));
    }
    const top = Math.max(0, this.box.scrollTop - ROW);
    const first = Math.floor(top / ROW);
    const last = Math.min(this.count - 1, Math.ceil((this.box.scrollTop + this.box.clientHeight) / ROW) + 2);
    const pad = cols.length ? this.lefts[cols[0]] : 0;
    const kept = new Map();
    const wanted = [];
    for (let i = first; i <= last; i += 1) {
      const item = this.opts.itemAt(i);
      if (item.kind === 'row') wanted.push(item.index);
      // a row already drawn with the same columns and data is kept as it is
      const values = item.kind === 'row' ? this.opts.rowAt(item.index) : item.label;
      const cls = item.kind === 'row' && this.opts.rowClass ? this.opts.rowClass(item.index) : '';
      const old = this.drawn.get(i);
      if (old && old.key === key && old.values === values && old.cls === cls) {
        kept.set(i, old);
        continue;
      }
      const node = item.kind === 'group'
        ? el('div', { class: 'vt-group', style: { top: `${i * ROW}px`, width: `${this.width}px` } }, item.label)
        : this.row(item.index, values, cols, pad, cls, i);
      if (old) old.node.replaceWith(node);
      else this.body.append(node);
      kept.set(i, { node, key, values, cls });
    }
    for (const [i, old] of this.drawn) if (!kept.has(i)) old.node.remove();
    this.drawn = kept;
    if (wanted.length && this.opts.onRange) this.opts.onRange(wanted[0], wanted[wanted.length - 1]);
  }

  row(index, values, cols, pad, cls, i) {
    const node = document.createElement('div');
    node.className = cls ? `vt-row ${cls}` : 'vt-row';
    node.setAttribute('role', 'row');
    node.dataset.index = index;
    node.style.top = `${i * ROW}px`;
    node.style.width = `${this.width}px`;
    node.style.paddingLeft = `${pad}px`;
    for (const ci of cols) {
      const c = this.columns[ci];
      const cell = document.createElement('div');
      cell.className = `vt-cell${c.num ? ' num' : ''}${c.cls ? ` ${c.cls}` : ''}`;
      cell.style.width = `${c.width}px`;
      const v = values === null ? '…' : c.cell(values, index);
      if (v instanceof Node) cell.append(v);
      else { cell.textContent = v; cell.title = v; }
      node.append(cell);
    }
    return node;
  }

  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.resize.disconnect();
    this.box.remove();
  }
}
