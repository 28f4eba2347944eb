import 'reflect-metadata';
export * from './plugin-api.js';
