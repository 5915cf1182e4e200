// For now `dev` starts the local control plane; the operator and the sample mock join it in later work.
export { run } from './controlplane.ts';
