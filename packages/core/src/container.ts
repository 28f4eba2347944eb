/**
 * The DI container. tsyringe needs the reflect-metadata polyfill loaded before
 * it is, so everything takes its container from here rather than importing
 * tsyringe first.
 */
import 'reflect-metadata';
import { container, type DependencyContainer } from 'tsyringe';

/** A fresh child of the root container: one per plugin registry (per VM process, per test). */
export function createContainer(): DependencyContainer {
  return container.createChildContainer();
}

export type { DependencyContainer };
