export async function render(root, ctx) {
  root.append(ctx.el('h1', {}, 'models'));
}
