import { parseBackendChoice, selectBackend, type BackendReport } from '../backend/select.js';

/** --backend wins over PAINTER_BACKEND; both default to auto. */
export async function backendFromArgs(args: Record<string, unknown>): Promise<BackendReport> {
  const flag = args['backend'];
  const choice =
    typeof flag === 'string'
      ? parseBackendChoice(flag, '--backend')
      : parseBackendChoice(process.env['PAINTER_BACKEND'] || undefined, 'PAINTER_BACKEND');
  return selectBackend(choice);
}

export function describeBackend(r: BackendReport): string {
  const gpu = r.name === 'tensorflow' ? (r.gpu ? ', GPU' : ', no GPU visible: running on CPU') : '';
  return `${r.name} (${r.package}${gpu}; ${r.reason})`;
}
